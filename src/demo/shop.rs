//! The demo's shop: a Django project's migrations (the files, as Django writes
//! them), its SQLite database, and the parts of the runbook the demo plays for
//! Django: `migrate`, the rollback, and an old replica still on release v1.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row};

pub const CUSTOMERS: usize = 50;
pub const PRODUCTS: usize = 200;
pub const GIFT_CARDS: usize = 40;
/// Release v2's migration file, and the migration as dropguard names it.
pub const RELEASE: &str = "shop/migrations/0003_retire_legacy_sku_and_gift_cards.py";
pub const MIGRATION: &str = "shop.0003_retire_legacy_sku_and_gift_cards";
pub const PREVIOUS: &str = "0002_customer_phone";

const FILES: [(&str, &str); 4] = [
    ("shop/__init__.py", ""),
    // Django loads no migrations from a folder that is not a package.
    ("shop/migrations/__init__.py", ""),
    (
        "shop/migrations/0001_initial.py",
        include_str!("shop/migrations/0001_initial.py"),
    ),
    (
        "shop/migrations/0002_customer_phone.py",
        include_str!("shop/migrations/0002_customer_phone.py"),
    ),
];
const RELEASE_FILE: &str = include_str!("shop/migrations/0003_retire_legacy_sku_and_gift_cards.py");

/// The tables as Django's SQLite backend creates them for 0001 and 0002.
const SCHEMA: &str = r#"
CREATE TABLE "django_migrations" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "app" varchar(255) NOT NULL, "name" varchar(255) NOT NULL, "applied" datetime NOT NULL);
CREATE TABLE "shop_customer" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "name" varchar(100) NOT NULL, "email" varchar(254) NOT NULL UNIQUE, "phone" varchar(20) NOT NULL);
CREATE TABLE "shop_product" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "name" varchar(200) NOT NULL, "price" decimal NOT NULL, "legacy_sku" varchar(40) NULL);
"#;
const GIFT_CARD_TABLE: &str = r#"
CREATE TABLE "shop_giftcard" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "code" varchar(20) NOT NULL UNIQUE, "balance" decimal NOT NULL, "customer_id" bigint NOT NULL REFERENCES "shop_customer" ("id") DEFERRABLE INITIALLY DEFERRED);
CREATE INDEX "shop_giftcard_customer_id_3b5a3fba" ON "shop_giftcard" ("customer_id");
"#;

pub struct Shop {
    dir: PathBuf,
    pool: SqlitePool,
}

/// What release v2 destroys, read exactly (SQLite's `quote()` keeps each
/// value's type), for comparing before and after.
#[derive(Debug, PartialEq, Eq)]
pub struct AtRisk {
    pub rows: usize,
    legacy_skus: Vec<String>,
    gift_cards: Vec<String>,
}

impl Shop {
    /// The project's files and its database at release v1, seeded.
    pub async fn create(dir: &Path) -> anyhow::Result<Self> {
        for (path, text) in FILES {
            write(&dir.join("project").join(path), text)?;
        }
        std::fs::create_dir_all(dir.join("logs")).context("creating logs/")?;
        std::fs::write(dir.join("logs/app.log"), "").context("creating logs/app.log")?;
        let options = SqliteConnectOptions::new()
            .filename(dir.join("shop.db"))
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .context("creating shop.db")?;
        let shop = Self {
            dir: dir.to_path_buf(),
            pool,
        };
        shop.exec(SCHEMA).await?;
        shop.exec(GIFT_CARD_TABLE).await?;
        let mut seed = String::from("BEGIN;\n");
        for (app, name) in [("shop", "0001_initial"), ("shop", PREVIOUS)] {
            seed.push_str(&format!(
                "INSERT INTO django_migrations (app, name, applied) VALUES ('{app}', '{name}', datetime('now'));\n"
            ));
        }
        for n in 1..=CUSTOMERS {
            seed.push_str(&format!(
                "INSERT INTO shop_customer (name, email, phone) VALUES ('Customer {n}', 'customer{n}@example.com', '+41 44 000 {n:04}');\n"
            ));
        }
        for n in 1..=PRODUCTS {
            // Some products never had a legacy SKU: NULL must come back NULL.
            let sku = if n % 7 == 0 {
                "NULL".to_string()
            } else {
                format!("'LEG-{n:05}'")
            };
            let price = format!("{}.{:02}", 5 + n % 90, n % 100);
            seed.push_str(&format!(
                "INSERT INTO shop_product (name, price, legacy_sku) VALUES ('Product {n}', {price}, {sku});\n"
            ));
        }
        for n in 1..=GIFT_CARDS {
            seed.push_str(&format!(
                "INSERT INTO shop_giftcard (code, balance, customer_id) VALUES ('GIFT-{n:04}', {}.50, {});\n",
                10 * n,
                1 + n % CUSTOMERS
            ));
        }
        seed.push_str("COMMIT;\n");
        shop.exec(&seed).await?;
        Ok(shop)
    }

    async fn exec(&self, sql: &str) -> anyhow::Result<()> {
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .context("changing shop.db")?;
        Ok(())
    }

    pub async fn at_risk_data(&self) -> anyhow::Result<AtRisk> {
        let strings = |sql: &'static str| async move {
            let rows = sqlx::query(sql)
                .fetch_all(&self.pool)
                .await
                .with_context(|| format!("reading shop.db: {sql}"))?;
            Ok::<_, anyhow::Error>(
                rows.iter()
                    .map(|row| row.get::<String, _>(0))
                    .collect::<Vec<_>>(),
            )
        };
        let legacy_skus =
            strings("SELECT id || ':' || quote(legacy_sku) FROM shop_product ORDER BY id").await?;
        let gift_cards = strings(
            "SELECT quote(id) || ',' || quote(code) || ',' || quote(balance) || ',' || quote(customer_id) FROM shop_giftcard ORDER BY id",
        )
        .await?;
        Ok(AtRisk {
            rows: legacy_skus.len() + gift_cards.len(),
            legacy_skus,
            gift_cards,
        })
    }

    /// Release v2's code and migration land in the project.
    pub fn land_release(&self) -> anyhow::Result<()> {
        write(&self.dir.join("project").join(RELEASE), RELEASE_FILE)
    }

    /// `manage.py migrate shop`, as Django does it on SQLite.
    pub async fn migrate_release(&self) -> anyhow::Result<()> {
        let (app, name) = MIGRATION.split_once('.').expect("app.name");
        self.exec(&format!(
            "BEGIN;
ALTER TABLE \"shop_product\" DROP COLUMN \"legacy_sku\";
DROP TABLE \"shop_giftcard\";
INSERT INTO django_migrations (app, name, applied) VALUES ('{app}', '{name}', datetime('now'));
COMMIT;"
        ))
        .await
    }

    /// `manage.py migrate shop 0002_customer_phone`: the column and the table
    /// come back, empty.
    pub async fn roll_back(&self) -> anyhow::Result<()> {
        let (app, name) = MIGRATION.split_once('.').expect("app.name");
        self.exec(&format!(
            "BEGIN;
ALTER TABLE \"shop_product\" ADD COLUMN \"legacy_sku\" varchar(40) NULL;
{GIFT_CARD_TABLE}
DELETE FROM django_migrations WHERE app = '{app}' AND name = '{name}';
COMMIT;"
        ))
        .await
    }

    /// Release v1's queries, run against the migrated database; each failure
    /// logged the way Django's `django.request` logger does. Returns how many.
    pub async fn old_replica_fails(&self, log: &Path) -> anyhow::Result<usize> {
        let pages = [
            (
                "/products/17/",
                "SELECT \"shop_product\".\"id\", \"shop_product\".\"name\", \"shop_product\".\"price\", \"shop_product\".\"legacy_sku\" FROM \"shop_product\" WHERE \"shop_product\".\"id\" = 17 LIMIT 21",
            ),
            (
                "/products/42/",
                "SELECT \"shop_product\".\"id\", \"shop_product\".\"name\", \"shop_product\".\"price\", \"shop_product\".\"legacy_sku\" FROM \"shop_product\" WHERE \"shop_product\".\"id\" = 42 LIMIT 21",
            ),
            (
                "/gift-cards/GIFT-0007/",
                "SELECT \"shop_giftcard\".\"id\", \"shop_giftcard\".\"code\", \"shop_giftcard\".\"balance\", \"shop_giftcard\".\"customer_id\" FROM \"shop_giftcard\" WHERE \"shop_giftcard\".\"code\" = 'GIFT-0007' LIMIT 21",
            ),
            (
                "/products/99/",
                "SELECT \"shop_product\".\"id\", \"shop_product\".\"name\", \"shop_product\".\"price\", \"shop_product\".\"legacy_sku\" FROM \"shop_product\" WHERE \"shop_product\".\"id\" = 99 LIMIT 21",
            ),
            (
                "/gift-cards/GIFT-0012/",
                "SELECT \"shop_giftcard\".\"id\", \"shop_giftcard\".\"code\", \"shop_giftcard\".\"balance\", \"shop_giftcard\".\"customer_id\" FROM \"shop_giftcard\" WHERE \"shop_giftcard\".\"code\" = 'GIFT-0012' LIMIT 21",
            ),
        ];
        let mut text = String::new();
        let mut failures = 0;
        for (path, sql) in pages {
            let Err(err) = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&self.pool).await else {
                continue;
            };
            let message = err
                .as_database_error()
                .map(|e| e.message().to_string())
                .unwrap_or_else(|| err.to_string());
            failures += 1;
            text.push_str(&django_error(path, &message));
        }
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(log)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .with_context(|| format!("writing {}", log.display()))?;
        Ok(failures)
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// Django's record of an unhandled database error in a view, with the chained
/// traceback it logs (`%(asctime)s %(levelname)s %(name)s %(message)s`).
fn django_error(path: &str, message: &str) -> String {
    let at = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S,%3f");
    format!(
        "{at} ERROR django.request Internal Server Error: {path}
Traceback (most recent call last):
  File \"/srv/shop/venv/lib/python3.11/site-packages/django/db/backends/utils.py\", line 105, in _execute
    return self.cursor.execute(sql, params)
  File \"/srv/shop/venv/lib/python3.11/site-packages/django/db/backends/sqlite3/base.py\", line 354, in execute
    return super().execute(query, params)
sqlite3.OperationalError: {message}

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File \"/srv/shop/venv/lib/python3.11/site-packages/django/core/handlers/exception.py\", line 55, in inner
    response = get_response(request)
  File \"/srv/shop/shop/views.py\", line 21, in detail
    return render(request, \"shop/detail.html\", {{\"object\": query.get()}})
django.db.utils.OperationalError: {message}
"
    )
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The demo's dropguard.toml: the embedded default (SQLite, a local vault,
/// a local log), the loopback Slack receiver, restores on approval.
pub fn config_toml(dir: &Path, slack: &str) -> String {
    let quoted = |path: PathBuf| toml::Value::String(path.display().to_string()).to_string();
    format!(
        r#"# Written by `dropguard demo`.
environment = "demo"

[database]
url = {database}

[django]
project_dir = {project}

[state]
dir = {state}

[[logs.file]]
path = {logs}
read_from = "beginning"
multiline_timeout = "300ms"
poll_interval = "200ms"

[deploys]
poll_interval = "200ms"

[detect]
window = "60s"
min_errors = 3

[alerts.slack]
webhook_url = {slack}

[restore]
mode = "approve"

[server]
listen = "127.0.0.1:0"
grace_period = "3s"
"#,
        database = toml::Value::String(format!("sqlite://{}", dir.join("shop.db").display())),
        project = quoted(dir.join("project")),
        state = quoted(dir.join("state")),
        logs = quoted(dir.join("logs/*.log")),
        slack = toml::Value::String(slack.to_string()),
    )
}
