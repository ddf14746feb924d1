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
use futures::stream;

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
        bucket: String,
        precision: influxdb2::api::write::TimestampPrecision,
        timeout: Duration,
    },
}

/// Pre-encoded lines handed to the influxdb2 crate as its data points.
struct Encoded(Bytes);

impl influxdb2::models::WriteDataPoint for Encoded {
    fn write_data_point_to<W: Write>(&self, mut w: W) -> std::io::Result<()> {
        w.write_all(&self.0)
    }
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

impl Writer {
    pub fn new(cfg: &Influx) -> Result<Self, String> {
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
                    .map_err(|e| e.to_string())?,
                    url: format!("{}/write", cfg.url),
                    query,
                    auth: username.clone().map(|u| (u, password.clone())),
                    gzip: cfg.gzip,
                    timeout: cfg.timeout,
                }
            }
            InfluxApi::V2 { org, bucket, token } => {
                use influxdb2::api::write::TimestampPrecision as P;
                // influxdb2's `gzip(x)` turns compression on whatever `x` is (0.5.2): call it
                // only when wanted. It compresses at level 9 (not configurable).
                // the crate's own reqwest (0.11) builder, with the private CA if any
                let http =
                    crate::tls::with_ca_011(reqwest011::ClientBuilder::new(), cfg.ca.as_ref());
                let mut builder =
                    influxdb2::ClientBuilder::with_builder(http, &cfg.url, org, token);
                if cfg.gzip {
                    builder = builder.gzip(true);
                }
                let client = builder.build().map_err(|e| e.to_string())?;
                Writer::V2 {
                    client,
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
                    let mut enc = flate2::write::GzEncoder::new(
                        Vec::with_capacity(body.len() / 4),
                        flate2::Compression::fast(),
                    );
                    if enc.write_all(&body).is_err() {
                        return Outcome::Retry {
                            after: None,
                            class: "io_error",
                            message: "gzip failed".into(),
                        };
                    }
                    match enc.finish() {
                        Ok(z) => req.header("Content-Encoding", "gzip").body(z),
                        Err(e) => {
                            return Outcome::Retry {
                                after: None,
                                class: "io_error",
                                message: e.to_string(),
                            }
                        }
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
                bucket,
                precision,
                timeout,
            } => {
                let points = stream::iter(vec![Encoded(body)]);
                match tokio::time::timeout(
                    *timeout,
                    client.write_with_precision(bucket, points, *precision),
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
}
