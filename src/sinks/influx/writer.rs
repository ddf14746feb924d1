//! Writing one batch of line protocol, and classifying what happened:
//! - v2 (`/api/v2/write`: InfluxDB 2.x/3.x, VictoriaMetrics) through the influxdb2 crate
//!   (gzip on the wire);
//! - v1 (`/write?db=&rp=`: InfluxDB 1.x) through reqwest, gzip by flate2.
//!
//! Both trust the public roots and the `ca_file` of `[influx]` (see `crate::tls`).
//!
//! Known limit: the influxdb2 crate hides response headers, so on the v2 path a 429's
//! `Retry-After` cannot be read and the capped backoff applies; v1 honours it.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;

use crate::config::influx::{Influx, InfluxApi, Precision};

/// What became of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// Try again later (5xx, 429, timeout, connection error), after `after` if the server said.
    Retry {
        after: Option<Duration>,
        class: &'static str,
        message: String,
    },
    /// 413: split the batch.
    TooLarge,
    /// Another 4xx: the data itself is refused (e.g. a field type conflict).
    Rejected {
        status: u16,
        message: String,
    },
}

pub enum Writer {
    V1 {
        http: reqwest::Client,
        url: String,
        query: Vec<(&'static str, String)>,
        auth: Option<(String, Option<String>)>,
        gzip: bool,
        timeout: Duration,
    },
    V2 {
        client: influxdb2::Client,
        org: String,
        bucket: String,
        precision: influxdb2::api::write::TimestampPrecision,
        /// Compress here (level 1) and send with `Content-Encoding: gzip`, a default header
        /// of the client: influxdb2's own gzip compresses at level 9, which at 100,000
        /// points/s took about a sixth of a core (BENCHMARKS.md, scale benchmark).
        gzip: bool,
        timeout: Duration,
    },
}

/// Gzip a batch at level 1 ("fast"): on line protocol about 6x smaller, at a fraction of
/// the CPU of the default level.
/// A failure is an outcome to retry (class `io_error`), as both APIs report it.
fn gzip_fast(body: &[u8]) -> Result<Vec<u8>, Outcome> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(body)
        .and_then(|()| enc.finish())
        .map_err(|e| Outcome::Retry {
            after: None,
            class: "io_error",
            message: format!("gzip failed: {e}"),
        })
}

fn classify(status: u16, message: String, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Written,
        413 => Outcome::TooLarge,
        429 => Outcome::Retry {
            after: retry_after,
            class: "throttled",
            message,
        },
        400..=499 => Outcome::Rejected { status, message },
        _ => Outcome::Retry {
            after: retry_after,
            class: "server_error",
            message,
        },
    }
}

/// Why the writer for `[influx]` could not be made (at start: the daemon does not start).
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("cannot build the HTTP client for InfluxDB: {0}")]
    Client(reqwest::Error),
    #[error("cannot build the InfluxDB v2 client: {0}")]
    V2Client(String),
}

impl Writer {
    pub fn new(cfg: &Influx) -> Result<Self, WriterError> {
        Ok(match &cfg.api {
            InfluxApi::V1 {
                database,
                retention_policy,
                username,
                password,
            } => {
                let mut query = vec![
                    ("db", database.clone()),
                    ("precision", cfg.precision.v1_str().to_string()),
                ];
                if let Some(rp) = retention_policy {
                    query.push(("rp", rp.clone()));
                }
                Writer::V1 {
                    http: crate::tls::with_ca(
                        reqwest::Client::builder().timeout(cfg.timeout),
                        cfg.ca.as_ref(),
                    )
                    .build()
                    .map_err(WriterError::Client)?,
                    url: format!("{}/write", cfg.url),
                    query,
                    auth: username.clone().map(|u| (u, password.clone())),
                    gzip: cfg.gzip,
                    timeout: cfg.timeout,
                }
            }
            InfluxApi::V2 { org, bucket, token } => {
                use influxdb2::api::write::TimestampPrecision as P;
                // influxdb2's own gzip (`ClientBuilder::gzip`) compresses at level 9, not
                // configurable: the batch is compressed here instead and the client (the
                // crate's reqwest 0.11, with the private CA if any) marks every request body
                // as gzip. The client makes no other requests.
                let mut http =
                    crate::tls::with_ca_011(reqwest011::ClientBuilder::new(), cfg.ca.as_ref());
                if cfg.gzip {
                    let mut h = reqwest011::header::HeaderMap::new();
                    h.insert(
                        reqwest011::header::CONTENT_ENCODING,
                        reqwest011::header::HeaderValue::from_static("gzip"),
                    );
                    http = http.default_headers(h);
                }
                let client = influxdb2::ClientBuilder::with_builder(http, &cfg.url, org, token)
                    .build()
                    .map_err(|e| WriterError::V2Client(e.to_string()))?;
                Writer::V2 {
                    client,
                    org: org.clone(),
                    gzip: cfg.gzip,
                    bucket: bucket.clone(),
                    precision: match cfg.precision {
                        Precision::Nanoseconds => P::Nanoseconds,
                        Precision::Microseconds => P::Microseconds,
                        Precision::Milliseconds => P::Milliseconds,
                        Precision::Seconds => P::Seconds,
                    },
                    timeout: cfg.timeout,
                }
            }
        })
    }

    /// Write one batch (complete lines).
    pub async fn write(&self, body: Bytes) -> Outcome {
        match self {
            Writer::V1 {
                http,
                url,
                query,
                auth,
                gzip,
                timeout: _,
            } => {
                let mut req = http.post(url).query(query);
                if let Some((u, p)) = auth {
                    req = req.basic_auth(u, p.as_ref());
                }
                let req = if *gzip {
                    match gzip_fast(&body) {
                        Ok(z) => req.header("Content-Encoding", "gzip").body(z),
                        Err(outcome) => return outcome,
                    }
                } else {
                    req.body(body)
                };
                match req.send().await {
                    Err(e) if e.is_timeout() => Outcome::Retry {
                        after: None,
                        class: "timeout",
                        message: e.to_string(),
                    },
                    Err(e) => Outcome::Retry {
                        after: None,
                        class: "connection",
                        message: e.to_string(),
                    },
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let retry_after = resp
                            .headers()
                            .get("Retry-After")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(Duration::from_secs);
                        let text = resp.text().await.unwrap_or_default();
                        classify(status, text, retry_after)
                    }
                }
            }
            Writer::V2 {
                client,
                org,
                bucket,
                precision,
                gzip,
                timeout,
            } => {
                let body: reqwest011::Body = if *gzip {
                    match gzip_fast(&body) {
                        Ok(z) => z.into(),
                        Err(outcome) => return outcome,
                    }
                } else {
                    body.into()
                };
                match tokio::time::timeout(
                    *timeout,
                    client.write_line_protocol_with_precision(org, bucket, body, *precision),
                )
                .await
                {
                    Err(_) => Outcome::Retry {
                        after: None,
                        class: "timeout",
                        message: format!("no answer within {} ms", timeout.as_millis()),
                    },
                    Ok(Ok(())) => Outcome::Written,
                    Ok(Err(influxdb2::RequestError::Http { status, text })) => {
                        classify(status.as_u16(), text, None)
                    }
                    Ok(Err(e)) => Outcome::Retry {
                        after: None,
                        class: "connection",
                        message: e.to_string(),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let s = |status| classify(status, "m".into(), Some(Duration::from_secs(3)));
        assert_eq!(s(204), Outcome::Written);
        assert_eq!(s(413), Outcome::TooLarge);
        assert_eq!(
            s(400),
            Outcome::Rejected {
                status: 400,
                message: "m".into()
            }
        );
        assert_eq!(
            s(422),
            Outcome::Rejected {
                status: 422,
                message: "m".into()
            }
        );
        assert!(
            matches!(s(429), Outcome::Retry { after: Some(d), class: "throttled", .. } if d == Duration::from_secs(3))
        );
        assert!(matches!(
            s(500),
            Outcome::Retry {
                class: "server_error",
                ..
            }
        ));
        assert!(matches!(
            s(503),
            Outcome::Retry {
                class: "server_error",
                ..
            }
        ));
    }

    /// One HTTP request as a raw server sees it: (head in lower case, body), answered 204.
    async fn capture_one(listener: tokio::net::TcpListener) -> (String, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the request head");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("a content-length");
        while buf.len() < head_end + len {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed inside the body");
            buf.extend_from_slice(&chunk[..n]);
        }
        sock.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        (head, buf[head_end..head_end + len].to_vec())
    }

    fn influx_cfg(api: InfluxApi, url: String, gzip: bool) -> Influx {
        Influx {
            api,
            url,
            precision: Precision::Milliseconds,
            gzip,
            batch_max_lines: 5000,
            batch_max_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            retry_backoff_max: Duration::from_secs(30),
            spool_dir: std::env::temp_dir(),
            spool_max_bytes: 1 << 20,
            spool_max_age: Duration::from_secs(3600),
            ca: None,
        }
    }

    /// Both APIs send the batch gzip-compressed (level 1, see `gzip_fast`) with
    /// `Content-Encoding: gzip` when `gzip = true`, and as it is otherwise; v2 carries the
    /// token, org, bucket and precision.
    #[tokio::test]
    async fn batches_go_on_the_wire_gzipped_or_plain_as_configured() {
        use std::io::Read;
        let lines = "pump_room,site=s,device=d p=1.5 1700000000000\n".repeat(200);
        for (api, gzip) in [("v1", true), ("v1", false), ("v2", true), ("v2", false)] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let api_cfg = match api {
                "v1" => InfluxApi::V1 {
                    database: "db".into(),
                    retention_policy: None,
                    username: None,
                    password: None,
                },
                _ => InfluxApi::V2 {
                    org: "estate".into(),
                    bucket: "propwatch".into(),
                    token: "t0ken".into(),
                },
            };
            let writer = Writer::new(&influx_cfg(api_cfg, url, gzip)).unwrap();
            let server = tokio::spawn(capture_one(listener));
            let outcome = writer.write(Bytes::from(lines.clone())).await;
            assert_eq!(outcome, Outcome::Written, "{api} gzip={gzip}");
            let (head, body) = server.await.unwrap();
            let sent = if gzip {
                assert!(head.contains("content-encoding: gzip"), "{api}: {head}");
                let mut out = String::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_string(&mut out)
                    .unwrap();
                assert!(body.len() * 5 < out.len(), "{api}: compressed");
                out
            } else {
                assert!(!head.contains("content-encoding"), "{api}: {head}");
                String::from_utf8(body).unwrap()
            };
            assert_eq!(sent, lines, "{api} gzip={gzip}: the batch as encoded");
            if api == "v2" {
                assert!(head.starts_with("post /api/v2/write?"), "{head}");
                for q in ["bucket=propwatch", "org=estate", "precision=ms"] {
                    assert!(head.lines().next().unwrap().contains(q), "{q}: {head}");
                }
                assert!(head.contains("authorization: token t0ken"), "{head}");
            }
        }
    }
}
