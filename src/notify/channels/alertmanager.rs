//! `type = "alertmanager"`: incidents as alerts to an Alertmanager (or a cluster of them),
//! for the teams that route their alerts there. Its worker in `notify` keeps the alerts of
//! open incidents posted (firing, then resolved); it takes no messages to people.

use futures::FutureExt;

use super::{nothing_more, Reach, Spec};

pub static SPEC: Spec = Spec {
    name: "alertmanager",
    reach: Reach::Alerts,
    robot: false,
    http: true,
    default_url: None,
    max_text: None,
    validate: nothing_more,
    send: |_, _, _, _| {
        async {
            Err(super::SendError::Unsendable(
                "alertmanager is sent by its own worker".to_string(),
            ))
        }
        .boxed()
    },
};
