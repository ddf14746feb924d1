//! The operator writes of `/api/v1`, once: their paths and their request bodies, as the
//! HTTP API takes them (`http::alarms`, `http::notify`) and the CLI sends them (`ops`).
//! Adding a write: a variant here with its route and body, its line in the router that
//! turns the body into an engine command, and its CLI subcommand.

use serde::{Deserialize, Serialize};

/// What a path segment must escape: everything but RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One kind of operator write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    AckAlarm,
    ResetAlarm,
    ShelveAlarm,
    UnshelveAlarm,
    AckIncident,
    Arrive,
    Resolve,
    Note,
    OutOfService,
    InService,
    TestChannel,
}

impl Write {
    pub const ALL: &'static [Write] = &[
        Write::AckAlarm,
        Write::ResetAlarm,
        Write::ShelveAlarm,
        Write::UnshelveAlarm,
        Write::AckIncident,
        Write::Arrive,
        Write::Resolve,
        Write::Note,
        Write::OutOfService,
        Write::InService,
        Write::TestChannel,
    ];

    /// The route, `{id}` standing for the alarm's, incident's, device's or channel's id.
    pub fn route(self) -> &'static str {
        match self {
            Write::AckAlarm => "/api/v1/alarms/{id}/ack",
            Write::ResetAlarm => "/api/v1/alarms/{id}/reset",
            Write::ShelveAlarm => "/api/v1/alarms/{id}/shelve",
            Write::UnshelveAlarm => "/api/v1/alarms/{id}/unshelve",
            Write::AckIncident => "/api/v1/incidents/{id}/ack",
            Write::Arrive => "/api/v1/incidents/{id}/arrive",
            Write::Resolve => "/api/v1/incidents/{id}/resolve",
            Write::Note => "/api/v1/incidents/{id}/note",
            Write::OutOfService => "/api/v1/devices/{id}/out-of-service",
            Write::InService => "/api/v1/devices/{id}/in-service",
            Write::TestChannel => "/api/v1/channels/{id}/test",
        }
    }

    /// The path for `id` (percent-encoded as one path segment).
    pub fn path(self, id: &str) -> String {
        let enc = percent_encoding::utf8_percent_encode(id, SEGMENT);
        self.route().replace("{id}", &enc.to_string())
    }
}

/// Who acts, and an optional note: acknowledge, reset, unshelve, arrive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByBody {
    /// Who acts. Ignored when the request is made as an account (a login, or a token with an
    /// owner): the account acts.
    #[serde(default)]
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShelveBody {
    /// Who acts. Ignored when the request is made as an account (a login, or a token with an
    /// owner): the account acts.
    #[serde(default)]
    pub by: String,
    pub reason: String,
    pub minutes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// Who acts. Ignored when the request is made as an account (a login, or a token with an
    /// owner): the account acts.
    #[serde(default)]
    pub by: String,
    pub cause: String,
    pub measures: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    /// Who acts. Ignored when the request is made as an account (a login, or a token with an
    /// owner): the account acts.
    #[serde(default)]
    pub by: String,
    pub text: String,
}

/// Out of service (with its reason, for `minutes`: default `[alarms] out_of_service_default`)
/// and back in service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes: Option<u64>,
    /// Who acts. Ignored when the request is made as an account (a login, or a token with an
    /// owner): the account acts.
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub reason: String,
}

/// A write's body names who acts (`by`); a request made as an account acts as that account.
pub trait Acting {
    fn by_mut(&mut self) -> &mut String;
}

macro_rules! acting {
    ($($t:ty),*) => {$(
        impl Acting for $t {
            fn by_mut(&mut self) -> &mut String {
                &mut self.by
            }
        }
    )*};
}
acting!(ByBody, ShelveBody, ResolveBody, NoteBody, ServiceBody);

/// A channel test: the people (ids) to address; none: robots still post to their group.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TestBody {
    #[serde(default)]
    pub people: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_and_routes_distinct() {
        assert_eq!(Write::AckIncident.path("12"), "/api/v1/incidents/12/ack");
        assert_eq!(
            Write::InService.path("pump-1_a.b"),
            "/api/v1/devices/pump-1_a.b/in-service"
        );
        assert_eq!(
            Write::OutOfService.path("泵 1/a"),
            "/api/v1/devices/%E6%B3%B5%201%2Fa/out-of-service"
        );
        let mut routes: Vec<_> = Write::ALL.iter().map(|w| w.route()).collect();
        routes.sort();
        routes.dedup();
        assert_eq!(routes.len(), Write::ALL.len());
    }
}
