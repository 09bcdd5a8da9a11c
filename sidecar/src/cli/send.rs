//! `edgehook send`: sign a body the way a Standard Webhooks sender does and
//! POST it, so a user can try the gateway in one line.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::signing;

pub struct SendArgs {
    pub url: String,
    pub secret: String,
    pub body: Vec<u8>,
    pub id: Option<String>,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
}

pub struct Sent {
    pub status: u16,
    pub body: String,
    pub id: String,
}

pub async fn send(args: SendArgs) -> Result<Sent, String> {
    let key = signing::decode_secret(&args.secret).map_err(|e| format!("--secret: {e}"))?;
    let id = args
        .id
        .unwrap_or_else(|| format!("msg_{}", uuid::Uuid::now_v7().simple()));
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client
        .post(&args.url)
        .header("content-type", &args.content_type)
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            signing::sign(&key, &id, ts, &args.body),
        )
        .body(args.body);
    for (k, v) in &args.headers {
        request = request.header(k, v);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("POST {}: {e}", args.url))?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Ok(Sent { status, body, id })
}
