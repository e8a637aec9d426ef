//! The command line: a stable interface that scripts and the tests use (docs/CLI.md).
//! Errors reach the operator as one line naming the problem and the fix; exit code 0 means the
//! command did what it says, 1 means it did not (with the reason on stderr), 2 is a usage error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod archive;
mod monitor;

use crate::config::{Config, LogFormat};
use crate::net::dialer::Dialer;
use crate::protocol::url::parse_relay_url;
use crate::protocol::Filter;
use crate::services::supervisor::Supervisor;
use crate::services::sync::{self, Mode, SyncContext, SyncStats};
use crate::services::{finder, seeder};
use crate::shutdown::Shutdown;
use crate::store::Stores;
use crate::timefmt::now_secs;

#[derive(Parser)]
#[command(
    name = "bigbrotr",
    version,
    about = "Nostr network observatory: discover relays, measure them, archive their events completely"
)]
struct Cli {
    /// Config file (default: $BIGBROTR_CONFIG, else ./config.toml if present, else the embedded default)
    #[arg(long, global = true, env = "BIGBROTR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the data dir, the stores and the node key; register the seed relays
    Init,
    /// Run every enabled service until SIGINT/SIGTERM
    Run,
    /// Synchronize one relay
    Sync {
        /// Relay URL (ws:// or wss://)
        #[arg(long)]
        relay: String,
        /// Archive its history once and exit: 0 when complete, 1 with the reason otherwise
        #[arg(long)]
        once: bool,
        /// With --once: reconnect this many times after a transient failure
        #[arg(long, default_value_t = 3)]
        retries: u32,
    },
    /// Archived events
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// The relay registry
    Relays {
        #[command(subcommand)]
        command: RelaysCommand,
    },
    /// Check relay health (NIP-11, NIP-66 open/read/write, DNS, TLS) from this node; without
    /// --once, run the monitor service alone until SIGINT/SIGTERM
    Monitor {
        /// Check only this relay (ws:// or wss://); it is registered if it was not
        #[arg(long, requires = "once")]
        relay: Option<String>,
        /// Run every check once (on --relay, or on every registered relay) and print the results
        #[arg(long)]
        once: bool,
        #[arg(long)]
        json: bool,
    },
    /// Ship the spool to the upstream archive ([upstream] database_url) without syncing
    Ship {
        /// Drain the spool to empty and exit: 0 when done, 1 with the reason if the archive
        /// stays unreachable for upstream.give_up_secs
        #[arg(long)]
        once: bool,
        /// First put the entries the archive refused earlier back into the spool (after fixing
        /// the cause)
        #[arg(long)]
        requeue_rejected: bool,
        /// First queue everything already stored (a node that ran without [upstream] before):
        /// every event and every relay it was seen on
        #[arg(long)]
        backfill: bool,
    },
    /// The central PostgreSQL archive (connects with DATABASE_URL or [archive] database_url)
    Archive {
        #[command(subcommand)]
        command: archive::ArchiveCommand,
    },
    /// Serve the archive: a read-only Nostr relay (and /health) on [serve] listen, beside a
    /// running node or alone, until SIGINT/SIGTERM
    Serve {
        /// Address and port to listen on, instead of serve.listen (e.g. 127.0.0.1:7777)
        #[arg(long)]
        listen: Option<String>,
    },
    /// Relays known/online, events stored, spool depth and ship lag, per-relay sync progress
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Print stored events as NIP-01 JSON, one per line, oldest first
    Export {
        /// A NIP-01 filter, e.g. '{"kinds":[1],"since":1700000000}'
        #[arg(long)]
        filter: Option<String>,
    },
}

#[derive(Subcommand)]
enum RelaysCommand {
    /// List registered relays: health status, last check, round trips, software, uptime
    List {
        #[arg(long)]
        json: bool,
    },
    /// One relay: latest NIP-11 document and NIP-66 result, uptime per day, recent checks
    Show {
        url: String,
        /// Days of history to show (uptime per UTC day and the checks in them)
        #[arg(long, default_value_t = 7)]
        days: u32,
        #[arg(long)]
        json: bool,
    },
    /// Register a relay
    Add { url: String },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    limit_malloc_arenas();
    // wss and rustls need one process-wide crypto provider, installed before anything connects.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives every thread that allocates its own malloc arena; with RocksDB, tokio and
/// blocking ingest threads that is ~10 MB of fragmentation on a 1 GiB Pi. Two arenas keep
/// peak RSS down (docs/BENCHMARKS.md) at no measurable throughput cost. Must run before any
/// thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // BIGBROTR_MALLOC_ARENAS overrides (0 leaves glibc's default).
        let arenas: i32 = std::env::var("BIGBROTR_MALLOC_ARENAS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2);
        if arenas > 0 {
            // SAFETY: mallopt only changes allocator tuning; called before other threads exist.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, arenas);
            }
        }
    }
}

fn load_config(path: Option<PathBuf>) -> Result<Config> {
    let path = path.or_else(|| {
        let p = PathBuf::from("config.toml");
        p.exists().then_some(p)
    });
    Ok(Config::load(path.as_deref())?)
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> Result<ExitCode> {
    let cfg = load_config(cli.config)?;
    init_logging(&cfg);
    match cli.command {
        Command::Init => cmd_init(&cfg),
        Command::Run => cmd_run(cfg),
        Command::Sync {
            relay,
            once,
            retries,
        } => cmd_sync(cfg, &relay, once, retries),
        Command::Events {
            command: EventsCommand::Export { filter },
        } => cmd_export(&cfg, filter.as_deref()),
        Command::Relays {
            command: RelaysCommand::List { json },
        } => monitor::cmd_relays_list(&cfg, json),
        Command::Relays {
            command: RelaysCommand::Show { url, days, json },
        } => monitor::cmd_relays_show(&cfg, &url, days, json),
        Command::Relays {
            command: RelaysCommand::Add { url },
        } => {
            let url = parse_relay_url(&url, &cfg.network.url_policy())?;
            let state = Stores::open_state(&cfg)?;
            let (_, added) = state.add_relay(&url, "cli")?;
            println!(
                "{} {url}",
                if added { "added" } else { "already registered" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => cmd_status(&cfg, json),
        Command::Serve { listen } => cmd_serve(cfg, listen),
        Command::Monitor { relay, once, json } => {
            monitor::cmd_monitor(cfg, relay.as_deref(), once, json)
        }
        Command::Ship {
            once,
            requeue_rejected,
            backfill,
        } => archive::cmd_ship(cfg, once, requeue_rejected, backfill),
        Command::Archive { command } => archive::cmd_archive(&cfg, command),
    }
}

/// `bigbrotr serve`: serve the node's store from this process (it takes the store: with a node
/// running, serving happens inside it, `[serve] enabled = true`).
fn cmd_serve(mut cfg: Config, listen: Option<String>) -> Result<ExitCode> {
    if let Some(l) = listen {
        cfg.serve.listen = l;
        cfg.serve
            .listen_addr()
            .map_err(|e| anyhow::anyhow!("--listen: {e}"))?;
    }
    let rt = runtime()?;
    rt.block_on(async move {
        // Bind first: a taken port is an error before the store is opened (and its query
        // indexes possibly built).
        let listener = std::sync::Arc::new(crate::serve::bind(&cfg.serve).await?);
        let stores = Stores::open(&cfg)?;
        let shutdown = Shutdown::new();
        watch_signals(shutdown.clone());
        tracing::info!(listen = %cfg.serve.listen, "serving: read-only Nostr relay at ws://{}/", cfg.serve.listen);
        crate::serve::serve_store(stores.clone(), std::sync::Arc::new(cfg.clone()), listener, shutdown)
            .await?;
        stores.events.flush()?;
        tracing::info!("stopped cleanly");
        Ok(ExitCode::SUCCESS)
    })
}

fn cmd_init(cfg: &Config) -> Result<ExitCode> {
    let stores = Stores::open(cfg)?;
    let (keys, created) = crate::keys::load_or_create(&cfg.key_file())?;
    let seeded = if cfg.seeder.enabled {
        seeder::seed(cfg, &stores)?
    } else {
        Default::default()
    };
    println!("data dir: {}", cfg.data_dir().display());
    println!(
        "node key: {} ({})",
        keys.public_key().to_hex(),
        if created { "created" } else { "existing" }
    );
    println!(
        "seed relays added: {} (skipped {})",
        seeded.added, seeded.skipped
    );
    Ok(ExitCode::SUCCESS)
}

/// The one dialer, from `[network]`.
fn dialer(cfg: &Config) -> Dialer {
    Dialer::new(
        cfg.network.url_policy(),
        Duration::from_secs(cfg.network.connect_timeout_secs),
    )
    .with_routes(routes(cfg))
}

/// The overlay routes, with the process's built-in Tor client when the config uses it. Its
/// mode is set by whichever command creates it first: one-shot commands (`sync --relay URL
/// --once`, `monitor --relay URL --once`) do so in wait-in-the-dial mode; otherwise it is
/// created here, never waiting in a dial.
fn routes(cfg: &Config) -> crate::net::dialer::Routes {
    #[allow(unused_mut)]
    let mut r = cfg.network.routes();
    #[cfg(feature = "tor")]
    {
        r.builtin_tor = crate::net::tor::shared(cfg, false);
    }
    r
}

fn context(cfg: &Config, stores: Stores, shutdown: Shutdown) -> Result<SyncContext> {
    let keys = match crate::keys::load_or_create(&cfg.key_file()) {
        Ok((k, _)) => Some(k),
        Err(e) => {
            tracing::warn!(error = %e, "no node key: NIP-42 AUTH disabled");
            None
        }
    };
    Ok(SyncContext {
        stores,
        dialer: dialer(cfg),
        cfg: cfg.sync.clone(),
        limits: cfg.network.event_limits(),
        max_message_bytes: cfg.network.max_message_bytes,
        keys,
        shutdown,
        stats: std::sync::Arc::new(SyncStats::default()),
        buffer_budget: std::sync::Arc::new(tokio::sync::Semaphore::new(
            cfg.sync
                .max_pages_in_flight
                .saturating_mul(cfg.sync.max_page_mb << 20)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        )),
        spool_max: cfg.spool_enabled().then_some(cfg.spool.max_entries),
        min_free_disk_mb: cfg.storage.min_free_disk_mb,
        data_dir: cfg.data_dir(),
    })
}

/// SIGINT/SIGTERM trigger a graceful shutdown.
fn watch_signals(shutdown: Shutdown) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutdown requested; finishing the batches in flight");
        crate::sd_notify::notify("STOPPING=1");
        shutdown.trigger();
    });
}

fn cmd_run(cfg: Config) -> Result<ExitCode> {
    let rt = runtime()?;
    let result = rt.block_on(async move {
        let stores = Stores::open(&cfg)?;
        let shutdown = Shutdown::new();
        watch_signals(shutdown.clone());
        // The built-in Tor client, before any dialer exists: in `run` an onion dial never waits
        // for the bootstrap (the relay is tried again later).
        #[cfg(feature = "tor")]
        let tor = crate::net::tor::shared(&cfg, false);
        #[cfg(feature = "tor")]
        if let Some(t) = &tor {
            // Created now (no network I/O), so a failure is known before any service dials.
            t.create_client();
        }
        #[cfg(not(feature = "tor"))]
        let tor: Option<()> = None;
        if cfg.seeder.enabled {
            let r = seeder::seed(&cfg, &stores)?;
            tracing::info!(
                added = r.added,
                skipped = r.skipped,
                "seed relays registered"
            );
        }
        let ctx = context(&cfg, stores.clone(), shutdown.clone())?;
        let mut sup = Supervisor::new(stores.clone(), shutdown.clone());
        if cfg.finder.enabled {
            let (s, p, b, i, sd) = (
                stores.clone(),
                cfg.network.url_policy(),
                cfg.finder.batch,
                Duration::from_secs(cfg.finder.interval_secs),
                shutdown.clone(),
            );
            let limits = (
                cfg.finder.max_new_per_hour,
                cfg.finder.max_new_per_site_per_hour,
            );
            sup.spawn("finder", move || {
                let (s, p, sd) = (s.clone(), p.clone(), sd.clone());
                async move { Ok(finder::run(s, p, b, limits, i, sd).await?) }
            });
        }
        if cfg.sync.enabled {
            let c = ctx.clone();
            sup.spawn("synchronizer", move || {
                let c = c.clone();
                async move { Ok(sync::run(c).await?) }
            });
        }
        let mut publishing = None;
        if cfg.monitor.enabled {
            let (mctx, handle) = monitor::context(&cfg, stores.state.clone(), shutdown.clone())?;
            publishing = handle;
            let mctx = std::sync::Arc::new(mctx);
            sup.spawn("monitor", move || {
                let c = mctx.clone();
                crate::services::monitor::run(c)
            });
        }
        if let Some(ship) = archive::ship_context(&cfg, stores.clone(), shutdown.clone())? {
            let ship = std::sync::Arc::new(ship);
            sup.spawn("shipper", move || {
                let ship = ship.clone();
                async move {
                    crate::services::shipper::run(&ship, false).await?;
                    Ok(())
                }
            });
        }
        if cfg.serve.enabled {
            let listener = std::sync::Arc::new(crate::serve::bind(&cfg.serve).await?);
            let (store, scfg, sd) = (stores.clone(), std::sync::Arc::new(cfg.clone()), shutdown.clone());
            tracing::info!(listen = %cfg.serve.listen, "serving: read-only Nostr relay at ws://{}/", cfg.serve.listen);
            sup.spawn("serve", move || {
                crate::serve::serve_store(store.clone(), scfg.clone(), listener.clone(), sd.clone())
            });
        }
        // Every service is running: tell systemd (Type=notify) and feed its watchdog.
        crate::sd_notify::ready();
        // Tor bootstraps in the background, after clearnet work has started.
        #[cfg(feature = "tor")]
        if let Some(t) = &tor {
            t.start_bootstrap();
        }
        let (s, st, sd) = (stores.clone(), ctx.stats.clone(), shutdown.clone());
        let reporter = tokio::spawn(async move {
            loop {
                write_sync_stats(&s, &st);
                write_tor_status(&s, tor.as_ref());
                if sd.sleep(Duration::from_secs(5)).await {
                    write_sync_stats(&s, &st);
                    return;
                }
            }
        });
        sup.join().await;
        let _ = reporter.await;
        if let Some(h) = publishing {
            // The monitor is gone, so the publishing queue is closed: let it send what it holds.
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
        stores.events.flush()?;
        tracing::info!("stopped cleanly");
        Ok(ExitCode::SUCCESS)
    });
    // Tor's background tasks (a bootstrap retrying forever while offline) must not hold the
    // process: everything acknowledged is already flushed.
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

/// The built-in Tor's status for `bigbrotr status` (`tor`/`status` in the state store).
#[cfg(feature = "tor")]
fn write_tor_status(stores: &Stores, tor: Option<&std::sync::Arc<crate::net::tor::BuiltinTor>>) {
    let v = match tor {
        Some(t) => serde_json::to_value(t.status()).unwrap_or_default(),
        None => serde_json::Value::Null,
    };
    let _ = stores.state.set_state("tor", "status", &v.to_string());
}

#[cfg(not(feature = "tor"))]
fn write_tor_status(stores: &Stores, _tor: Option<&()>) {
    let _ = stores.state.set_state("tor", "status", "null");
}

fn write_sync_stats(stores: &Stores, st: &SyncStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let v = serde_json::json!({
        "received": st.received.load(Relaxed),
        "new_events": st.new_events.load(Relaxed),
        "invalid": st.invalid.load(Relaxed),
        "verified": st.verified.load(Relaxed),
        "pages": st.pages.load(Relaxed),
    });
    let _ = stores
        .state
        .set_state("synchronizer", "stats", &v.to_string());
}

fn cmd_sync(cfg: Config, relay: &str, once: bool, retries: u32) -> Result<ExitCode> {
    let url = parse_relay_url(relay, &cfg.network.url_policy()).with_context(|| {
        format!(
            "cannot sync {relay:?} (set [network] allow_local = true for loopback/private relays)"
        )
    })?;
    let rt = runtime()?;
    rt.block_on(async move {
        let stores = Stores::open(&cfg)?;
        let shutdown = Shutdown::new();
        watch_signals(shutdown.clone());
        let (id, _) = stores.state.add_relay(&url, "cli")?;
        // `--once` waits for the built-in Tor in the dial (the user asked for this relay).
        #[cfg(feature = "tor")]
        crate::net::tor::shared(&cfg, once);
        let ctx = context(&cfg, stores.clone(), shutdown.clone())?;
        let mode = if once { Mode::Once } else { Mode::Turn };
        let mut attempts = 0;
        loop {
            let before = stores.state.cursor(id)?;
            match sync::session::run(&ctx, id, &url, mode).await {
                Ok(out) if once => {
                    stores.events.flush()?;
                    if !out.pass_complete {
                        bail!("{url}: the pass did not finish");
                    }
                    if !out.unproven.is_empty() || out.unproven_dropped > 0 {
                        let first = out.unproven.first().map_or_else(
                            || "none listed".to_string(),
                            |(s, why)| format!("first: {s}: {why}"),
                        );
                        let dropped = if out.unproven_dropped > 0 {
                            format!(
                                ", {} more past the limit of {} recorded per relay",
                                out.unproven_dropped,
                                crate::store::state::MAX_UNPROVEN_PER_RELAY
                            )
                        } else {
                            String::new()
                        };
                        eprintln!(
                            "{url}: {} second(s) could not be proven complete ({first}{dropped}); received {} events, {} new",
                            out.unproven.len() as u64 + out.unproven_dropped,
                            out.received,
                            out.new_events
                        );
                        return Ok(ExitCode::FAILURE);
                    }
                    println!(
                        "{url}: history archived completely; received {} events, {} new, {} refused (invalid or over a size cap)",
                        out.received, out.new_events, out.refused
                    );
                    stores.state.record_success(id, 0)?;
                    return Ok(ExitCode::SUCCESS);
                }
                Ok(_) => {
                    attempts = 0;
                    // Between turns (and while paused for disk or spool): never a tight loop.
                    if shutdown.sleep(Duration::from_secs(cfg.sync.backoff_min_secs)).await {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                Err(sync::SyncError::Shutdown) => {
                    stores.events.flush()?;
                    eprintln!("{url}: interrupted");
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => {
                    // A session that moved the cursor made progress: only consecutive fruitless
                    // attempts count against --retries.
                    if stores.state.cursor(id)? != before {
                        attempts = 0;
                    }
                    attempts += 1;
                    let failures = stores.state.failures(id).unwrap_or(0) + 1;
                    let wait = sync::backoff_secs(failures, cfg.sync.backoff_min_secs, cfg.sync.backoff_max_secs);
                    stores.state.record_failure(id, &e.to_string(), wait)?;
                    if once && attempts > retries {
                        stores.events.flush()?;
                        bail!("{url}: {e}");
                    }
                    let wait = if once { Duration::from_secs(1) } else { Duration::from_secs(wait as u64) };
                    tracing::warn!(relay = %url, error = %e, retry_in_secs = wait.as_secs(), "sync failed");
                    if shutdown.sleep(wait).await {
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
        }
    })
}

fn cmd_export(cfg: &Config, filter: Option<&str>) -> Result<ExitCode> {
    let filter = match filter {
        Some(f) => Filter::from_json(f).map_err(|e| anyhow::anyhow!("--filter: {e}"))?,
        None => Filter::default(),
    };
    let stores = Stores::open_read_only(cfg)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut n = 0u64;
    let limit = filter.limit.unwrap_or(u64::MAX);
    let mut io_err = None;
    stores.events.scan_time(
        filter.since.unwrap_or(0),
        filter.until.unwrap_or(u64::MAX),
        |ev| {
            if !filter.matches(&ev) {
                return true;
            }
            if let Err(e) = writeln!(out, "{}", ev.to_json()) {
                io_err = Some(e);
                return false;
            }
            n += 1;
            n < limit
        },
    )?;
    if let Some(e) = io_err {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(ExitCode::SUCCESS);
        }
        return Err(e.into());
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_status(cfg: &Config, json: bool) -> Result<ExitCode> {
    let stores = Stores::open_read_only(cfg)?;
    let v = crate::status::node_status(cfg, &stores, now_secs())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let ship: Option<crate::services::shipper::ShipStats> =
        serde_json::from_value(v["ship"].clone()).unwrap_or(None);
    let lag = v["ship_lag_secs"].as_u64();
    println!("data dir:       {}", cfg.data_dir().display());
    println!(
        "relays:         {} known, {} online, {} offline ({} checks in history)",
        n("relays_known"),
        n("relays_online"),
        n("relays_offline"),
        n("observations")
    );
    if n("events_evicted") > 0 {
        println!(
            "events stored:  {} ({} sightings; {} shipped and evicted, ids kept)",
            n("events_stored"),
            n("sightings"),
            n("events_evicted")
        );
    } else {
        println!(
            "events stored:  {} ({} sightings)",
            n("events_stored"),
            n("sightings")
        );
    }
    println!("spool depth:    {}", n("spool_depth"));
    println!("tor:            {}", tor_line(&v["tor"]));
    if cfg.upstream.enabled() || ship.is_some() {
        let lag = lag.map_or("none (spool empty)".to_string(), |l| format!("{l} s"));
        println!("ship lag:       {lag}");
        if let Some(s) = &ship {
            println!(
                "shipped:        {} events ({} new), {} sightings ({} new) in {} batches to {}",
                s.events_sent,
                s.events_new,
                s.sightings_sent,
                s.sightings_new,
                s.batches,
                s.archive
            );
            if let Some(e) = &s.last_error {
                let ok_after = s.last_ok_at.unwrap_or(0) >= s.last_error_at.unwrap_or(0);
                println!(
                    "last ship error: {e}{}",
                    if ok_after { " (recovered since)" } else { "" }
                );
            }
        }
    }
    if n("ship_rejected") > 0 {
        println!(
            "ship rejected:  {} spool entries the archive cannot take (in quarantine)",
            n("ship_rejected")
        );
    }
    if n("quarantined") > 0 {
        println!("quarantined:    {} corrupt records", n("quarantined"));
    }
    if let Some(services) = v["services"].as_object() {
        for (name, h) in services {
            println!("service {name}: {}", h["state"].as_str().unwrap_or("?"));
        }
    }
    for p in v["relays"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| !p["done_until"].is_null() || !p["pass_top"].is_null())
    {
        let state = match (p["done_until"].as_u64(), p["pass_frontier"].as_u64()) {
            (_, Some(f)) => format!("backfilling, at {f}"),
            (Some(d), None) => format!("complete through {d}"),
            _ => "not started".into(),
        };
        println!(
            "  {:<48} {:<28} received {:>9}  new {:>9}  unproven {}",
            p["url"].as_str().unwrap_or("?"),
            state,
            p["events_received"].as_u64().unwrap_or(0),
            p["events_new"].as_u64().unwrap_or(0),
            p["unproven_seconds"].as_u64().unwrap_or(0)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How `.onion` relays are reached, and (built-in Tor) the status `run` last wrote.
fn tor_line(t: &serde_json::Value) -> String {
    match t["route"].as_str() {
        Some("proxy") => format!(
            "external tor at {} (network.tor_proxy)",
            t["proxy"].as_str().unwrap_or("?")
        ),
        Some("builtin") => match t["status"].as_object() {
            Some(s) => format!(
                "built-in, {} {}% ({}; {} s ago)",
                s.get("state").and_then(|v| v.as_str()).unwrap_or("?"),
                s.get("percent").and_then(|v| v.as_u64()).unwrap_or(0),
                s.get("summary").and_then(|v| v.as_str()).unwrap_or(""),
                now_secs().saturating_sub(s.get("at").and_then(|v| v.as_u64()).unwrap_or(0)),
            ),
            None => "built-in, not started (starts with `bigbrotr run`)".into(),
        },
        _ => "off (onion relays are skipped; see [tor] and network.tor_proxy)".into(),
    }
}
