//! A Slack incoming webhook on loopback, for the demo: it accepts what dropguard
//! posts and hands each message on, to be printed.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};

pub struct Receiver {
    addr: SocketAddr,
    messages: Mutex<mpsc::UnboundedReceiver<Value>>,
}

impl Receiver {
    /// Listens on a free loopback port until the process ends.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the demo's Slack receiver on loopback")?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let body = request.into_body().collect().await?.to_bytes();
                            if let Ok(message) = serde_json::from_slice::<Value>(&body) {
                                let _ = tx.send(message);
                            }
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(
                                b"ok",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            messages: Mutex::new(rx),
        })
    }

    /// The webhook URL to configure (`alerts.slack.webhook_url`).
    pub fn url(&self) -> String {
        format!("http://{}/services/DEMO/DEMO/demo", self.addr)
    }

    /// The next message received, within `wait`.
    pub async fn next(&self, wait: Duration) -> Option<Value> {
        let mut messages = self.messages.lock().await;
        tokio::time::timeout(wait, messages.recv())
            .await
            .ok()
            .flatten()
    }
}

/// A Block Kit message as a reader sees it in Slack: each block's text, without
/// the markup characters.
pub fn readable(message: &Value) -> String {
    let mut lines = Vec::new();
    for block in message["blocks"].as_array().into_iter().flatten() {
        let texts: Vec<&str> = match block["type"].as_str() {
            Some("context") => block["elements"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["text"].as_str())
                .collect(),
            _ => block["text"]["text"].as_str().into_iter().collect(),
        };
        for text in texts {
            let plain = text
                .replace("```", "")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&");
            lines.extend(
                plain
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.replace(['*', '`'], "")),
            );
        }
    }
    if lines.is_empty() {
        return message["text"].as_str().unwrap_or_default().to_string();
    }
    lines.join("\n")
}
