//! The admin CLI's connection: where the admin API is, the bearer token
//! every call carries, and how a failed call becomes a message and an exit
//! code. The commands themselves are in `events`, `dlq`, `destinations` and
//! `stats`; they are only clients of the API.

use crate::error_chain::error_chain;
use clap::Args;
use edgehook_proto::v1::admin_client::AdminClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::output::{self, Format, exit};

#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The sidecar's admin API.
    #[arg(
        long = "admin",
        global = true,
        env = "EDGEHOOK_ADMIN_ADDR",
        default_value = "http://127.0.0.1:7071"
    )]
    pub addr: String,
    /// The admin token (the sidecar's `admin.token`).
    #[arg(
        long,
        global = true,
        env = "EDGEHOOK_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// How to print answers.
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Client = AdminClient<InterceptedService<Channel, BearerToken>>;

/// Why a command failed, and the exit code that says so.
#[derive(Debug)]
pub enum CliError {
    Call(tonic::Status),
    Usage(String),
    Unavailable(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Call(s) => output::exit_code(s),
            CliError::Usage(_) => exit::USAGE,
            CliError::Unavailable(_) => exit::UNAVAILABLE,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Call(s) => f.write_str(&output::describe(s)),
            CliError::Usage(m) | CliError::Unavailable(m) => f.write_str(m),
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Call(s)
    }
}

pub async fn connect(args: &AdminArgs) -> Result<Client, CliError> {
    let token = match &args.token {
        None => None,
        Some(t) => Some(
            format!("Bearer {t}")
                .parse::<AsciiMetadataValue>()
                .map_err(|_| CliError::Usage("the admin token must be printable ASCII".into()))?,
        ),
    };
    let endpoint = Endpoint::from_shared(args.addr.clone())
        .map_err(|e| CliError::Usage(format!("--admin {:?}: {e}", args.addr)))?
        .connect_timeout(std::time::Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| {
        CliError::Unavailable(format!(
            "cannot reach the admin API at {}: {}",
            args.addr,
            error_chain(&e)
        ))
    })?;
    Ok(AdminClient::with_interceptor(channel, BearerToken(token)))
}
