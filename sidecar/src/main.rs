//! The `edgehook` command: `serve` runs the sidecar; the other subcommands
//! are tools around it.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use edgehook_sidecar::cli::admin::{self, AdminArgs, CliError};
use edgehook_sidecar::cli::destinations::{self, DestinationsCommand};
use edgehook_sidecar::cli::dlq::{self, DlqCommand};
use edgehook_sidecar::cli::events::{self, EventsCommand};
use edgehook_sidecar::cli::{receive, send, stats};
use edgehook_sidecar::config::Config;
use edgehook_sidecar::server;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "edgehook",
    version,
    about = "Webhook gateway sidecar for Envoy and Istio",
    after_help = "The admin commands (events, dlq, destinations, stats) talk to the sidecar's\n\
        admin API: --admin / EDGEHOOK_ADMIN_ADDR (default http://127.0.0.1:7071) and\n\
        --token / EDGEHOOK_ADMIN_TOKEN.\n\n\
        Exit codes: 0 success; 1 failure; 2 usage error or invalid argument;\n\
        3 not found; 4 the admin token was refused; 5 the admin API is unreachable."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "EDGEHOOK_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Find webhooks and see every delivery attempt (admin API).
    Events {
        #[command(subcommand)]
        command: EventsCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The dead-letter queue: list, redrive, purge (admin API).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Destinations: state and queues; pause and resume (admin API).
    Destinations {
        #[command(subcommand)]
        command: DestinationsCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Totals, queues and storage at a glance (admin API).
    #[command(after_help = "Examples:\n  edgehook stats\n  edgehook stats --output json")]
    Stats {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Run the sidecar: durable ingest from the Envoy filter and delivery to destinations.
    #[command(
        after_help = "Examples:\n  edgehook serve --config sidecar/edgehook.toml\n\n\
        Log level: set EDGEHOOK_LOG (for example EDGEHOOK_LOG=debug); default info."
    )]
    Serve {
        /// The configuration file (TOML). See the README's configuration reference.
        #[arg(long, short, env = "EDGEHOOK_CONFIG")]
        config: PathBuf,
    },
    /// Sign a body as a Standard Webhooks sender would and POST it.
    #[command(after_help = "Examples:\n  \
        edgehook send http://127.0.0.1:8080/hooks/demo --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \\\n      \
        --data '{\"type\":\"invoice.paid\",\"amount\":4200}'\n  \
        echo '{\"type\":\"ping\"}' | edgehook send http://127.0.0.1:8080/hooks/demo --secret \"$SECRET\"\n\n\
        Exit code: 0 when the gateway answered 2xx, 1 otherwise, 2 on usage errors.")]
    Send {
        /// Where to POST (the gateway's source path).
        url: String,
        /// The source's whsec_ secret.
        #[arg(long, env = "EDGEHOOK_SEND_SECRET")]
        secret: String,
        /// The body; read from stdin when neither --data nor --data-file is given.
        #[arg(long, short, conflicts_with = "data_file")]
        data: Option<String>,
        /// Read the body from this file.
        #[arg(long)]
        data_file: Option<PathBuf>,
        /// The webhook-id to send (default: a fresh msg_... id).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "application/json")]
        content_type: String,
        /// Extra header, as "Name: value"; may be repeated.
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
    },
    /// Run a small receiver that prints every webhook it gets.
    #[command(
        after_help = "Examples:\n  edgehook receive --listen 127.0.0.1:8081\n  \
        edgehook receive --listen 127.0.0.1:8081 --secret whsec_... --status 500"
    )]
    Receive {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
        /// Verify the Standard Webhooks signature of deliveries with this secret.
        #[arg(long, env = "EDGEHOOK_RECEIVE_SECRET")]
        secret: Option<String>,
        /// The status code to answer with.
        #[arg(long, default_value_t = 200)]
        status: u16,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGEHOOK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Cancelled on Ctrl-C or SIGTERM.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    t.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        t.cancel();
    });
    token
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Serve { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let ingest = match TcpListener::bind(config.ingest.listen).await {
                Ok(l) => l,
                Err(e) => return fail(format!("cannot listen on {}: {e}", config.ingest.listen)),
            };
            // Without a token the admin API is not served at all.
            let admin = match &config.admin.token {
                None => None,
                Some(_) => match TcpListener::bind(config.admin.listen).await {
                    Ok(l) => Some(l),
                    Err(e) => {
                        return fail(format!(
                            "admin.listen: cannot listen on {}: {e}",
                            config.admin.listen
                        ));
                    }
                },
            };
            // Metrics are for watching; a taken port must not stop durable
            // ingest, so it is logged loudly and the sidecar runs without them.
            let metrics = match TcpListener::bind(config.metrics.listen).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!(listen = %config.metrics.listen, error = %e, "metrics.listen: cannot listen; /metrics is off");
                    None
                }
            };
            let listeners = server::Listeners {
                ingest,
                admin,
                metrics,
            };
            match server::run_with(config, listeners, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Send {
            url,
            secret,
            data,
            data_file,
            id,
            content_type,
            headers,
        } => {
            let body = match (data, data_file) {
                (Some(d), _) => d.into_bytes(),
                (None, Some(path)) => match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) => return fail(format!("{}: {e}", path.display())),
                },
                (None, None) => {
                    let mut b = Vec::new();
                    if let Err(e) = std::io::stdin().read_to_end(&mut b) {
                        return fail(format!("stdin: {e}"));
                    }
                    b
                }
            };
            let mut parsed = Vec::new();
            for h in headers {
                match h.split_once(':') {
                    Some((k, v)) => parsed.push((k.trim().to_string(), v.trim().to_string())),
                    None => return usage(format!("--header {h:?}: expected \"Name: value\"")),
                }
            }
            let args = send::SendArgs {
                url,
                secret,
                body,
                id,
                content_type,
                headers: parsed,
            };
            match send::send(args).await {
                Ok(sent) => {
                    println!("{} {}", sent.status, sent.body);
                    eprintln!("webhook-id: {}", sent.id);
                    if (200..300).contains(&sent.status) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => fail(e),
            }
        }
        Command::Events { command, admin } => {
            with_admin(&admin, |c, f| events::run(command, c, f)).await
        }
        Command::Dlq { command, admin } => with_admin(&admin, |c, f| dlq::run(command, c, f)).await,
        Command::Destinations { command, admin } => {
            with_admin(&admin, |c, f| destinations::run(command, c, f)).await
        }
        Command::Stats { admin } => with_admin(&admin, stats::run).await,
        Command::Receive {
            listen,
            secret,
            status,
        } => {
            let listener = match TcpListener::bind(&listen).await {
                Ok(l) => l,
                Err(e) => return fail(format!("cannot listen on {listen}: {e}")),
            };
            match receive::run(listener, secret, status, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
    }
}

/// Connects to the admin API and runs one command; failures print one line
/// and exit with the code documented in `--help`.
async fn with_admin<F, Fut>(args: &AdminArgs, command: F) -> ExitCode
where
    F: FnOnce(admin::Client, edgehook_sidecar::cli::output::Format) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    let result = match admin::connect(args).await {
        Ok(client) => command(client, args.output).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgehook: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("edgehook: {e}");
    ExitCode::from(1)
}

fn usage(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("edgehook: {e}");
    ExitCode::from(2)
}
