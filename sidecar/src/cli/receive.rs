//! `edgehook receive`: a small webhook receiver that prints what arrives,
//! verifying the Standard Webhooks signature when given the secret. It is
//! the demo receiver of `make run` and a handy endpoint for trying things.

use std::io::Write;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::signing;

#[derive(Clone)]
struct State {
    key: Option<Vec<u8>>,
    status: StatusCode,
}

pub async fn run(
    listener: TcpListener,
    secret: Option<String>,
    status: u16,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let key = secret
        .map(|s| signing::decode_secret(&s).map_err(|e| format!("--secret: {e}")))
        .transpose()?;
    let status = StatusCode::from_u16(status).map_err(|e| format!("--status: {e}"))?;
    let state = State { key, status };
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move { handle(&state, method, uri, headers, body) }
        },
    );
    let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("edgehook receive: listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| e.to_string())
}

fn handle(state: &State, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let id = text("webhook-id");
    let signature = match (&state.key, text("webhook-timestamp").parse::<i64>()) {
        (None, _) => "not checked",
        (Some(key), Ok(ts)) if signing::verify(key, id, ts, &body, text("webhook-signature")) => {
            "valid"
        }
        (Some(_), _) => "INVALID",
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "--> {method} {uri}  webhook-id={id}  signature={signature}  {} bytes  content-type={}",
        body.len(),
        text("content-type")
    );
    let _ = writeln!(out, "{}", String::from_utf8_lossy(&body));
    let _ = out.flush();
    state.status
}
