//! `type = "email"`: one mail to everyone of the step with an address, through SMTP
//! (lettre: STARTTLS, implicit TLS or a plain local relay; optional login).

use futures::FutureExt;

use super::{truncate, Outgoing, Reach, SendError, Spec};
use crate::config::notify::{Channel, ChannelCfg, SmtpTls};

pub static SPEC: Spec = Spec {
    name: "email",
    reach: Reach::Email,
    robot: false,
    http: false,
    default_url: None,
    max_text: None,
    validate,
    send: |_, ch, out, _| email(ch, out).boxed(),
};

fn validate(c: &ChannelCfg, add: &mut dyn FnMut(&str, String)) {
    if c.host.is_none() {
        add("host", "an email channel needs the SMTP host".into());
    }
    match &c.from {
        None => add("from", "an email channel needs a from address".into()),
        Some(f) if f.parse::<lettre::message::Mailbox>().is_err() => {
            add("from", format!("{f:?} is not a mail address"))
        }
        _ => {}
    }
}

async fn email(ch: &Channel, out: &Outgoing) -> Result<String, SendError> {
    use lettre::message::{header::ContentType, Mailbox};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let from: Mailbox = ch
        .from
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e| SendError::Unsendable(format!("from: {e}")))?;
    let mut b = Message::builder()
        .from(from)
        .subject(truncate(&out.headline, 200));
    let mut any = false;
    for p in &out.people {
        if let Some(e) = &p.email {
            if let Ok(addr) = e.parse() {
                b = b.to(Mailbox::new(Some(p.name.clone()), addr));
                any = true;
            }
        }
    }
    if !any {
        return Err(SendError::Unsendable("nobody to mail: no address".into()));
    }
    let msg = b
        .header(ContentType::TEXT_PLAIN)
        .body(out.text.clone())
        .map_err(|e| SendError::Unsendable(format!("building the mail: {e}")))?;
    let host = ch.host.as_deref().unwrap_or("localhost");
    let builder = match ch.tls {
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
        SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            host,
        )),
    }
    .map_err(|e| SendError::transport(&e))?;
    let mut builder = builder.timeout(Some(ch.timeout));
    if let Some(p) = ch.port {
        builder = builder.port(p);
    }
    if let (Some(u), Some(pw)) = (&ch.username, &ch.password) {
        builder = builder.credentials(Credentials::new(u.clone(), pw.clone()));
    }
    let mailer = builder.build();
    let r = mailer
        .send(msg)
        .await
        .map_err(|e| SendError::transport(&e))?;
    Ok(format!("SMTP {}", r.code()))
}
