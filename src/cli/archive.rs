//! `bigbrotr archive ...` (administer the central archive) and `bigbrotr ship`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::archive::{admin, migrate, Pool, Target};
use crate::config::Config;
use crate::services::shipper::{self, ShipContext};
use crate::shutdown::Shutdown;
use crate::store::Stores;

#[derive(Subcommand)]
pub enum ArchiveCommand {
    /// Apply pending schema migrations (safe to run twice, or from two places at once)
    Migrate,
    /// Check the schema, functions, roles and privileges; print what is missing (exit 1 if any)
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Node login roles
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Create login role NAME in the node group with a generated password (printed once);
    /// idempotent: an existing role keeps its password unless --reset-password
    Add {
        name: String,
        #[arg(long)]
        reset_password: bool,
        /// The node's public key (hex or npub, `bigbrotr init` prints it): bind it to NAME now,
        /// so no other node role can claim it
        #[arg(long)]
        key: Option<String>,
    },
}

pub fn cmd_archive(cfg: &Config, command: ArchiveCommand) -> Result<ExitCode> {
    let target = Target::admin(cfg)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        let pool = Pool::new(target, 1, Duration::from_secs(600));
        let mut conn = pool
            .get()
            .await
            .with_context(|| format!("cannot connect to the archive {}", pool.target().shown))?;
        match command {
            ArchiveCommand::Migrate => {
                let r = migrate::migrate(&mut conn).await?;
                for m in &r.applied {
                    println!("applied {m}");
                }
                for m in &r.already {
                    println!("already applied {m}");
                }
                for v in &r.unknown {
                    eprintln!(
                        "warning: the archive has migration {v}, which this bigbrotr does not know (a newer version migrated it)"
                    );
                }
                println!("archive {} is up to date", pool.target().shown);
                Ok(ExitCode::SUCCESS)
            }
            ArchiveCommand::Verify { json } => {
                let checks = migrate::verify(&mut conn).await?;
                let missing = checks.iter().filter(|c| !c.ok).count();
                if json {
                    println!("{}", serde_json::to_string_pretty(&checks)?);
                } else {
                    for c in &checks {
                        println!(
                            "{} {:<52} {}",
                            if c.ok { "ok     " } else { "MISSING" },
                            c.what,
                            c.detail
                        );
                    }
                    if missing > 0 {
                        eprintln!(
                            "{missing} check(s) failed: run `bigbrotr archive migrate` as the archive's owner"
                        );
                    } else {
                        println!("archive {} verified", pool.target().shown);
                    }
                }
                Ok(if missing == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            ArchiveCommand::Node {
                command:
                    NodeCommand::Add {
                        name,
                        reset_password,
                        key,
                    },
            } => {
                let key = key
                    .map(|k| {
                        nostr::PublicKey::parse(&k).map_err(|e| {
                            anyhow::anyhow!("--key {k:?} is not a public key (64 hex or npub): {e}")
                        })
                    })
                    .transpose()?;
                let role = admin::node_add(&mut conn, &name, reset_password).await?;
                if let Some(k) = key {
                    admin::bind_key(&mut conn, &name, &k.to_bytes()).await?;
                    println!("node key {} is bound to {name}", k.to_hex());
                }
                let shown = &pool.target().shown;
                let host_db = shown.split_once('@').map_or("HOST:PORT/DB", |(_, r)| r);
                match &role.password {
                    Some(pw) => {
                        println!(
                            "{} database role {} in {}. Its password is shown only now:\n",
                            if role.created { "created" } else { "reset the password of" },
                            role.name,
                            migrate::NODE_ROLE
                        );
                        println!("  BIGBROTR_DB_PASSWORD={pw}\n");
                        println!("On the node, put that in its environment (or in the file named by upstream.password_file) and this in config.toml");
                        println!("(use your PgBouncer's host and port if it is not {host_db}):\n");
                        println!("[upstream]\ndatabase_url = \"postgres://{}@{host_db}\"\n", role.name);
                        if let Some(v) = &role.verifier {
                            println!("PgBouncer auth_file line (only if PgBouncer uses auth_file rather than auth_query):\n");
                            println!("\"{}\" \"{v}\"", role.name);
                        }
                    }
                    None => println!(
                        "role {} already exists in {}; its password is unchanged (--reset-password sets a new one)",
                        role.name,
                        migrate::NODE_ROLE
                    ),
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// The shipper's context, when `[upstream]` is configured.
pub fn ship_context(
    cfg: &Config,
    stores: Stores,
    shutdown: Shutdown,
) -> Result<Option<ShipContext>> {
    let Some(target) = Target::upstream(cfg)? else {
        return Ok(None);
    };
    let (keys, _) = crate::keys::load_or_create(&cfg.key_file())?;
    let pool = Pool::new(
        target,
        cfg.upstream.connections,
        Duration::from_secs(cfg.upstream.batch_timeout_secs),
    );
    Ok(Some(ShipContext {
        stores,
        pool,
        node_key: keys.public_key().to_bytes(),
        cfg: cfg.upstream.clone(),
        retention: cfg.storage.shipped_retention(true).map(|keep| {
            crate::services::retention::Retention {
                keep,
                data_dir: cfg.data_dir(),
                min_free_disk_mb: cfg.storage.min_free_disk_mb,
            }
        }),
        shutdown,
    }))
}

pub fn cmd_ship(
    cfg: Config,
    once: bool,
    requeue_rejected: bool,
    backfill: bool,
) -> Result<ExitCode> {
    let rt = super::runtime()?;
    rt.block_on(async move {
        let stores = Stores::open(&cfg)?;
        let shutdown = Shutdown::new();
        super::watch_signals(shutdown.clone());
        let Some(ctx) = ship_context(&cfg, stores.clone(), shutdown.clone())? else {
            anyhow::bail!(
                "no upstream archive configured: set [upstream] database_url in {}",
                cfg.source
                    .as_ref()
                    .map_or("config.toml".into(), |p| p.display().to_string())
            );
        };
        if backfill {
            let n = stores.events.spool_backfill(10_000)?;
            eprintln!("queued {n} spool entries: every stored event and sighting");
        }
        if requeue_rejected {
            let n = stores.events.spool_requeue_rejected()?;
            eprintln!("requeued {n} spool entries the archive had refused");
        }
        let ctx = Arc::new(ctx);
        let result = shipper::run(&ctx, once).await;
        stores.events.flush()?;
        let stats = result?;
        if once {
            let depth = stores.events.counters().spool_depth;
            if depth > 0 && shutdown.is_triggered() {
                eprintln!("interrupted with {depth} spool entries left");
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "spool drained to {}; shipped in total: {} events ({} new), {} sightings ({} new), {} rejected",
                stats.archive,
                stats.events_sent,
                stats.events_new,
                stats.sightings_sent,
                stats.sightings_new,
                stats.rejected
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
