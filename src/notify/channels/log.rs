//! `type = "log"`: the message in the daemon's log (a test or a last resort).

use futures::FutureExt;
use tracing::info;

use super::{nothing_more, Outgoing, Reach, SendError, Spec};
use crate::config::notify::Channel;

pub static SPEC: Spec = Spec {
    name: "log",
    reach: Reach::Group,
    robot: false,
    http: false,
    default_url: None,
    max_text: None,
    validate: nothing_more,
    send: |_, ch, out, _| async move { send(ch, out) }.boxed(),
};

fn send(ch: &Channel, out: &Outgoing) -> Result<String, SendError> {
    info!(channel = %ch.id, people = ?out.people.iter().map(|p| &p.name).collect::<Vec<_>>(), "notification:\n{}", out.text);
    Ok("logged".into())
}
