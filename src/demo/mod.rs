//! `dropguard demo`: the runbook played end to end on the embedded default, with
//! nothing to install. A small shop on SQLite, its Django migrations, an app
//! log, a loopback stand-in for Slack that prints what it receives, and the real
//! daemon (in this process) doing its real work: it preserves what release v2
//! drops before `migrate`, ties the old replica's errors to it, alerts, and
//! after the rollback restores the data and proves it.
//!
//! The demo plays the parts that are not dropguard's: Django's `migrate` (the
//! same DDL and `django_migrations` rows) and an old replica (its queries run
//! against the database for real; the errors SQLite returns are logged the way
//! Django logs them).

mod receiver;
mod shop;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::FutureExt;
use serde_json::Value;

use crate::config;

/// Each wait of the demo gives up after this.
const WAIT: Duration = Duration::from_secs(12);

pub struct Args {
    /// Keep everything here instead of a temporary directory.
    pub dir: Option<PathBuf>,
}

pub async fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<u8> {
    let started = Instant::now();
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            prepare_dir(dir)?;
            // Absolute once, here: the config written below names files in it,
            // and a relative path there would be read against the config's own
            // directory (`rel/rel/project`).
            std::path::absolute(dir)
                .with_context(|| format!("resolving --dir {}", dir.display()))?
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("dropguard-demo-")
                .tempdir()
                .context("creating a temporary directory for the demo")?;
            temp.path().to_path_buf()
        }
    };
    let mut say = Narrator { started, out };
    say.line(&format!(
        "dropguard demo: the runbook of a release that drops data, on a small shop (SQLite) in {}",
        dir.display()
    ))?;

    // The shop as it runs today: release v1, migrated and full of data.
    let shop = shop::Shop::create(&dir).await?;
    let before = shop.at_risk_data().await?;
    say.step(&format!(
        "shop.db at release v1 (shop.0002): {} customers, {} products with a legacy SKU, {} gift cards",
        shop::CUSTOMERS,
        shop::PRODUCTS,
        shop::GIFT_CARDS
    ))?;

    let slack = receiver::Receiver::start().await?;
    let config_path = dir.join("dropguard.toml");
    std::fs::write(&config_path, shop::config_toml(&dir, &slack.url()))
        .with_context(|| format!("writing {}", config_path.display()))?;
    let config = config::load(&config_path)
        .map_err(|err| anyhow::anyhow!("{err}\n(the demo wrote this configuration: a bug)"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (bound, address) = tokio::sync::oneshot::channel();
    let daemon = tokio::spawn(crate::app::serve(
        config,
        stopped.map(|_| "the demo's end").boxed(),
        Some(bound),
    ));
    let addr = tokio::time::timeout(WAIT, address)
        .await
        .ok()
        .and_then(Result::ok)
        .context("the daemon did not start; rerun with DROPGUARD_LOG=info to see its log")?;
    let api = Api::new(addr)?;
    api.wait_ready().await?;
    say.step(&format!(
        "dropguard run: watching shop/migrations, django_migrations and logs/app.log (http://{addr})"
    ))?;

    // Release v2 lands: code first, its migration drops a column and a table.
    shop.land_release()?;
    say.step(&format!(
        "release v2 lands: {} drops shop_product.legacy_sku and the table shop_giftcard",
        shop::RELEASE
    ))?;
    let snapshot = api.wait_for_snapshot(shop::MIGRATION).await?;
    say.step(&format!(
        "preserved before migrate: snapshot {} ({} rows, checksummed)",
        snapshot.0, snapshot.1
    ))?;

    shop.migrate_release().await?;
    say.step(&format!(
        "$ python manage.py migrate shop   (played by the demo: {} applied, the data is gone)",
        shop::MIGRATION
    ))?;
    api.wait_for_deploy().await?;
    say.step("dropguard saw the deploy in django_migrations and watches for errors")?;

    let errors = shop.old_replica_fails(&dir.join("logs/app.log")).await?;
    say.step(&format!(
        "an old replica still on v1 fails {errors} times; Django logs the tracebacks to logs/app.log"
    ))?;
    let incident = api.wait_for_incident().await?;
    let id = incident["id"].as_str().unwrap_or_default().to_string();
    say.step(&format!(
        "incident {id} opened: {}",
        incident["headline"].as_str().unwrap_or_default()
    ))?;
    let alert = slack
        .next(WAIT)
        .await
        .context("no alert reached the Slack receiver")?;
    say.step("Slack (the loopback receiver) got:")?;
    say.quote(&receiver::readable(&alert))?;

    shop.roll_back().await?;
    say.step(&format!(
        "$ python manage.py migrate shop {}   (played by the demo: the column and table are back, empty)",
        shop::PREVIOUS
    ))?;
    say.step(&format!(
        "$ dropguard incidents approve {id}   (restore.mode = \"approve\")"
    ))?;
    let restored = api.approve(&id).await?;
    for step in restored["restore"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
    {
        say.quote(&format!(
            "{} {}: {}",
            step["status"].as_str().unwrap_or_default(),
            step["step"].as_str().unwrap_or_default().replace('_', " "),
            step["detail"].as_str().unwrap_or_default()
        ))?;
    }
    let follow_up = slack
        .next(WAIT)
        .await
        .context("the restored follow-up did not reach the Slack receiver")?;
    say.step("Slack got the follow-up:")?;
    say.quote(&receiver::readable(&follow_up))?;

    let after = shop.at_risk_data().await?;
    if after != before {
        bail!("the restored data differs from the data before the release (a bug in dropguard)");
    }
    say.step(&format!(
        "checked apart from dropguard: shop_product.legacy_sku and shop_giftcard hold exactly the data of before the release ({} rows)",
        before.rows
    ))?;

    let _ = stop.send(());
    daemon
        .await
        .context("the daemon panicked")?
        .context("the daemon failed")?;
    shop.close().await;
    let kept = match &args.dir {
        Some(dir) => format!(
            "everything is kept in {}; try `dropguard --config {} incidents show {id}`",
            dir.display(),
            dir.join("dropguard.toml").display()
        ),
        None => "the temporary directory is removed".to_string(),
    };
    say.step(&format!("done: dropguard stopped cleanly; {kept}"))?;
    Ok(0)
}

/// A `--dir` must be new or empty: the demo writes a whole project there and
/// must not mix with (or overwrite) anything else.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty; give --dir a new or empty directory (the demo writes a database, a project and logs there)",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        }
        Err(err) => Err(err).with_context(|| format!("reading {}", dir.display())),
    }
}

/// The timeline: each line with the seconds since the start.
struct Narrator<'a> {
    started: Instant,
    out: &'a mut dyn Write,
}

impl Narrator<'_> {
    fn line(&mut self, text: &str) -> std::io::Result<()> {
        writeln!(self.out, "{text}")?;
        self.out.flush()
    }

    fn step(&mut self, text: &str) -> std::io::Result<()> {
        writeln!(
            self.out,
            "{:>5.1}s  {text}",
            self.started.elapsed().as_secs_f64()
        )?;
        self.out.flush()
    }

    fn quote(&mut self, text: &str) -> std::io::Result<()> {
        for line in text.lines() {
            writeln!(self.out, "          | {line}")?;
        }
        self.out.flush()
    }
}

/// The daemon's API, as a person (or a script) would use it.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .context("building the HTTP client")?,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    async fn json(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.get(path).await?;
        if status != 200 {
            bail!("GET {path} answered {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET {path} is not JSON"))
    }

    /// Polls `probe` until it yields, for at most [`WAIT`].
    async fn until<T, F, Fut>(&self, what: &str, mut probe: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = probe().await? {
                return Ok(found);
            }
            if Instant::now() > deadline {
                bail!(
                    "{what} did not happen within {} s; rerun with DROPGUARD_LOG=info to see the daemon's log",
                    WAIT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        self.until("the daemon turning ready", || async {
            Ok((self.get("/readyz").await?.0 == 200).then_some(()))
        })
        .await
    }

    /// The complete snapshot of `migration`: its id and rows.
    async fn wait_for_snapshot(&self, migration: &str) -> anyhow::Result<(String, u64)> {
        self.until("the automatic snapshot", || async {
            let listed = self.json("/api/v1/snapshots").await?;
            Ok(listed.as_array().into_iter().flatten().find_map(|s| {
                (s["migration"] == migration && s["complete"] == true).then(|| {
                    let rows = s["objects"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|o| o["rows"].as_u64())
                        .sum();
                    (s["id"].as_str().unwrap_or_default().to_string(), rows)
                })
            }))
        })
        .await
    }

    async fn wait_for_deploy(&self) -> anyhow::Result<()> {
        self.until("the deploy being seen", || async {
            let (_, metrics) = self.get("/metrics").await?;
            Ok(metrics
                .lines()
                .any(|l| {
                    l.starts_with(r#"dropguard_deploys_total{origin="django_migrations"} "#)
                        && !l.ends_with(" 0")
                })
                .then_some(()))
        })
        .await
    }

    async fn wait_for_incident(&self) -> anyhow::Result<Value> {
        self.until("the incident", || async {
            let listed = self.json("/api/v1/incidents").await?;
            Ok(listed
                .as_array()
                .and_then(|l| l.first())
                .filter(|i| i["state"] == "alerted")
                .cloned())
        })
        .await
    }

    /// Approves the restore and waits for its end; the incident as it ends.
    async fn approve(&self, id: &str) -> anyhow::Result<Value> {
        let path = format!("/api/v1/incidents/{id}/restore");
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status().as_u16();
        if status != 202 {
            bail!(
                "POST {path} answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        let incident = self
            .until("the restore", || async {
                let incident = self.json(&format!("/api/v1/incidents/{id}")).await?;
                Ok((incident["restore"]["status"] != "running").then_some(incident))
            })
            .await?;
        if incident["restore"]["status"] != "done" {
            bail!(
                "the restore failed: {}",
                incident["restore"]["error"]
                    .as_str()
                    .unwrap_or("no reason given")
            );
        }
        Ok(incident)
    }
}
