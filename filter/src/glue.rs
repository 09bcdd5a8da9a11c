//! The proxy-wasm adapter, and the only module that talks to the host.
//!
//! It reads what Envoy offers, hands it to `edge`, and carries the decision
//! back. It calls `hostcalls::*` directly because the SDK's trait helpers
//! unwrap host results and would trap the VM on a bad status or a non-UTF-8
//! header value. Client headers are read as bytes in the headers callback
//! (after that the host may no longer offer them).

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use crate::config::FilterConfig;
use crate::edge::{self, BodyDecision, HeadDecision, PublishResult, RequestHead};
use crate::headers::Headers;
use crate::reply::{Reason, Reply};

const INGEST_SERVICE: &str = "edgehook.v1.Ingest";
const PUBLISH_METHOD: &str = "Publish";

proxy_wasm::main! {{
    // Also installs the hook that logs a panic's message before the trap.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root { config: None }));
}}

struct Root {
    config: Option<Rc<FilterConfig>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(raw)) => raw,
            _ => {
                log::error!("edgehook: the plugin has no configuration");
                return false;
            }
        };
        match FilterConfig::parse(&raw, &|name| std::env::var(name).ok()) {
            Ok(config) => {
                log::info!("edgehook: configured {} source(s)", config.sources.len());
                self.config = Some(Rc::new(config));
                true
            }
            Err(e) => {
                // Returning false rejects the config: startup fails, an xDS
                // update is NACKed, `envoy --mode validate` exits 1.
                log::error!("edgehook: invalid configuration: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Returning None would panic in the SDK; without a config (which
        // Envoy does not allow) every request is refused as unavailable.
        Some(Box::new(Stream {
            config: self.config.clone(),
            phase: Phase::Headers,
            head: RequestHead::default(),
        }))
    }
}

enum Phase {
    Headers,
    Buffering { source: usize },
    AwaitingAck { token: u32 },
    Replied,
}

struct Stream {
    config: Option<Rc<FilterConfig>>,
    phase: Phase,
    head: RequestHead,
}

impl Stream {
    fn reply(&mut self, reply: Reply) -> Action {
        self.phase = Phase::Replied;
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        if let Err(status) = hostcalls::send_http_response(reply.status, headers, Some(&reply.body))
        {
            log::warn!("edgehook: could not send the local reply: {status:?}");
        }
        Action::Pause
    }

    fn unavailable(&mut self) -> Action {
        self.reply(Reply::reject(Reason::SidecarUnavailable, None))
    }

    fn finish_body(&mut self, source: usize, size: usize) -> Action {
        let Some(config) = self.config.clone() else {
            return self.unavailable();
        };
        let Some(src) = config.sources.get(source) else {
            return self.unavailable();
        };
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size) {
            Ok(body) => body.unwrap_or_default(),
            Err(_) => return self.unavailable(),
        };
        let now_ms = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        match edge::on_body(src, &self.head, &body, now_ms) {
            BodyDecision::Reply(r) => self.reply(r),
            BodyDecision::Publish(message) => {
                match hostcalls::dispatch_grpc_call(
                    &config.sidecar.cluster,
                    INGEST_SERVICE,
                    PUBLISH_METHOD,
                    Vec::new(),
                    Some(&message),
                    config.sidecar.timeout,
                ) {
                    Ok(token) => {
                        self.phase = Phase::AwaitingAck { token };
                        Action::Pause
                    }
                    Err(status) => {
                        // An unknown cluster fails here, synchronously.
                        log::warn!(
                            "edgehook: cannot call the sidecar on cluster {:?}: {status:?}",
                            config.sidecar.cluster
                        );
                        self.unavailable()
                    }
                }
            }
        }
    }
}

impl Context for Stream {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if !matches!(self.phase, Phase::AwaitingAck { token } if token == token_id) {
            return;
        }
        let reply = if status_code == 0 {
            match hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size) {
                Ok(bytes) => edge::on_publish_result(PublishResult::Ok(&bytes.unwrap_or_default())),
                Err(_) => edge::on_publish_result(PublishResult::Failed {
                    grpc_status: status_code,
                }),
            }
        } else {
            let message = hostcalls::get_grpc_status().ok().and_then(|(_, m)| m);
            log::warn!(
                "edgehook: sidecar answered gRPC status {status_code}: {}",
                message.unwrap_or_default()
            );
            edge::on_publish_result(PublishResult::Failed {
                grpc_status: status_code,
            })
        };
        self.reply(reply);
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return self.unavailable();
        };
        // Header names are tokens Envoy's codecs have validated; values are
        // whatever the client sent, so they stay bytes.
        let pairs = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(pairs) => pairs,
            Err(_) => return self.unavailable(),
        };
        let client_address = hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        self.head = RequestHead::new(Headers::new(pairs), end_of_stream, client_address);
        match edge::on_headers(&config, &self.head) {
            HeadDecision::Reply(r) => self.reply(r),
            HeadDecision::ReadBody { source } => {
                self.phase = Phase::Buffering { source };
                // Needs allow_on_headers_stop_iteration, or the body never comes.
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Phase::Buffering { source } = self.phase else {
            return Action::Pause;
        };
        let too_large = self
            .config
            .as_ref()
            .and_then(|c| c.sources.get(source))
            .and_then(|src| edge::body_too_large(src, body_size));
        if let Some(r) = too_large {
            return self.reply(r);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish_body(source, body_size)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers end the request; the body is complete.
        let Phase::Buffering { source } = self.phase else {
            return Action::Pause;
        };
        self.finish_body(source, usize::MAX)
    }
}
