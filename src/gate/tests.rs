use super::stats::{Entry, Statements};
use super::*;

const SELECT_BRAND: &str = r#"SELECT "catalog_product"."id", "catalog_product"."brand_code" FROM "catalog_product" LIMIT $1"#;
const SELECT_NAME: &str =
    r#"SELECT "catalog_product"."id", "catalog_product"."name" FROM "catalog_product" LIMIT $1"#;
const OWN_COUNT: &str = r#"SELECT COUNT(*) FROM "catalog_product" AS dropguard_own WHERE $1 AND ("brand_code" IS NOT NULL)"#;

fn column() -> Object {
    Object {
        migration: "catalog.0016_remove_product_brand".into(),
        table: "catalog_product".into(),
        column: Some("brand_code".into()),
    }
}

fn table() -> Object {
    Object {
        migration: "catalog.0015_delete_digitalproduct".into(),
        table: "catalog_product".into(),
        column: None,
    }
}

fn reads(rows: u64) -> Counters {
    Counters {
        scans: Some(rows),
        rows_read: rows,
        ..Counters::default()
    }
}

/// A PostgreSQL sample: counters of catalog_product, and statements with calls.
fn sample(counters: Option<Counters>, statements: Option<&[(&str, u64)]>) -> Sample {
    Sample {
        table_source: "pg_stat_user_tables",
        tables: Ok(counters
            .map(|c| ("catalog_product".to_string(), c))
            .into_iter()
            .collect()),
        statement_source: "pg_stat_statements",
        statements: match statements {
            Some(list) => Ok(Statements {
                entries: list
                    .iter()
                    .map(|(text, calls)| {
                        (
                            text.to_string(),
                            Entry {
                                calls: *calls,
                                rows: *calls,
                                text: text.to_string(),
                            },
                        )
                    })
                    .collect(),
                hidden_calls: 0,
                hidden: None,
            }),
            None => Err(Unavailable {
                reason: "pg_stat_statements is not installed in this database".into(),
                fix: Some("CREATE EXTENSION pg_stat_statements;".into()),
            }),
        },
    }
}

fn one(object: Object, before: &Sample, after: &Sample) -> Verdict {
    judge(Engine::Postgres, &[object], before, after, &BTreeMap::new())
        .pop()
        .unwrap()
}

#[test]
fn a_statement_selecting_the_column_during_the_window_makes_it_in_use() {
    let before = sample(
        Some(reads(10)),
        Some(&[(SELECT_BRAND, 5), (SELECT_NAME, 1)]),
    );
    let after = sample(
        Some(reads(24)),
        Some(&[(SELECT_BRAND, 19), (SELECT_NAME, 1)]),
    );
    let verdict = one(column(), &before, &after);
    assert_eq!(verdict.status, Status::InUse);
    assert!(
        verdict.summary.starts_with("14 calls: SELECT"),
        "{}",
        verdict.summary
    );
    assert!(
        verdict.summary.contains("brand_code"),
        "{}",
        verdict.summary
    );
    assert!(matches!(
        &verdict.evidence[0],
        Evidence::Statement { calls: 14, statement, .. } if statement == SELECT_BRAND
    ));
}

#[test]
fn statements_that_ran_only_before_the_window_are_no_evidence() {
    let before = sample(Some(reads(10)), Some(&[(SELECT_BRAND, 5)]));
    let after = sample(
        Some(reads(13)),
        Some(&[(SELECT_BRAND, 5), (SELECT_NAME, 3)]),
    );
    let verdict = one(column(), &before, &after);
    assert_eq!(verdict.status, Status::Unused, "{}", verdict.summary);
    assert!(
        verdict
            .summary
            .contains("by statements not naming the column"),
        "{}",
        verdict.summary
    );
    // The table itself is still read: a whole-table drop would be in use.
    assert_eq!(one(table(), &before, &after).status, Status::InUse);
}

#[test]
fn dropguards_own_reads_are_left_out() {
    let before = sample(Some(reads(10)), Some(&[(OWN_COUNT, 1)]));
    let after = sample(Some(reads(11)), Some(&[(OWN_COUNT, 2)]));
    let verdict = one(column(), &before, &after);
    assert_eq!(verdict.status, Status::Unused, "{}", verdict.summary);
    let verdict = one(table(), &before, &after);
    assert_eq!(verdict.status, Status::Unused, "{}", verdict.summary);
    assert!(
        verdict.summary.contains("dropguard's own"),
        "{}",
        verdict.summary
    );
    assert!(
        verdict
            .evidence
            .iter()
            .any(|e| matches!(e, Evidence::OwnReads { calls: 1, .. }))
    );
}

#[test]
fn without_statement_statistics_a_read_table_leaves_its_columns_unknown_with_the_fix() {
    let before = sample(Some(reads(10)), None);
    let moved = sample(Some(reads(12)), None);
    let verdict = one(column(), &before, &moved);
    assert_eq!(verdict.status, Status::Unknown);
    assert!(
        verdict
            .summary
            .contains("CREATE EXTENSION pg_stat_statements"),
        "{}",
        verdict.summary
    );
    // A table nothing touched cannot have a column in use.
    let still = sample(Some(reads(10)), None);
    assert_eq!(one(column(), &before, &still).status, Status::Unused);
    // A table's own counters settle a whole-table drop.
    assert_eq!(one(table(), &before, &moved).status, Status::InUse);
    assert_eq!(one(table(), &before, &still).status, Status::Unused);
}

#[test]
fn hidden_statements_that_ran_make_a_column_unknown_never_unused() {
    let mut before = sample(Some(reads(10)), Some(&[(SELECT_NAME, 1)]));
    let mut after = sample(Some(reads(12)), Some(&[(SELECT_NAME, 1)]));
    let hidden = Unavailable {
        reason: "the text of other roles' statements is hidden from gate".into(),
        fix: Some("GRANT pg_read_all_stats TO \"gate\";".into()),
    };
    for (s, calls) in [(&mut before, 3), (&mut after, 9)] {
        let statements = s.statements.as_mut().unwrap();
        statements.hidden_calls = calls;
        statements.hidden = Some(hidden.clone());
    }
    let verdict = one(column(), &before, &after);
    assert_eq!(verdict.status, Status::Unknown);
    assert!(
        verdict
            .summary
            .contains("GRANT pg_read_all_stats TO \"gate\";"),
        "{}",
        verdict.summary
    );
    let statistics = Statistics::of(&after);
    assert_eq!(statistics.statements.state, "partial");
}

#[test]
fn without_any_statistics_everything_is_unknown() {
    let none = Sample {
        table_source: "sqlite",
        tables: Err(Unavailable {
            reason: "SQLite keeps no usage statistics".into(),
            fix: None,
        }),
        statement_source: "sqlite",
        statements: Err(Unavailable {
            reason: "SQLite keeps no usage statistics".into(),
            fix: None,
        }),
    };
    for object in [column(), table()] {
        let verdict = one(object, &none, &none);
        assert_eq!(verdict.status, Status::Unknown);
        assert!(verdict.summary.contains("SQLite keeps no usage statistics"));
    }
}

#[test]
fn log_lines_naming_an_object_make_it_in_use() {
    let none = sample(None, None);
    let logs = BTreeMap::from([(
        column(),
        LogMentions {
            lines: 2,
            sample: "SELECT brand_code FROM catalog_product".into(),
        },
    )]);
    let verdict = judge(Engine::Postgres, &[column()], &none, &none, &logs)
        .pop()
        .unwrap();
    assert_eq!(verdict.status, Status::InUse);
    assert_eq!(verdict.summary, "2 log lines naming it");
}

#[test]
fn a_truncated_digest_naming_the_table_leaves_the_column_unknown() {
    let cut = "SELECT `catalog_product` . `id` , `catalog_product` . `na...";
    let mut before = sample(Some(reads(1)), Some(&[]));
    let mut after = sample(Some(reads(5)), Some(&[(cut, 4)]));
    for s in [&mut before, &mut after] {
        s.table_source = "performance_schema";
        s.statement_source = "performance_schema";
    }
    let verdict = judge(
        Engine::Mysql,
        &[column()],
        &before,
        &after,
        &BTreeMap::new(),
    )
    .pop()
    .unwrap();
    assert_eq!(verdict.status, Status::Unknown);
    assert!(
        verdict
            .summary
            .contains("performance_schema_max_digest_length"),
        "{}",
        verdict.summary
    );
}

#[test]
fn the_migrations_own_ddl_is_no_use() {
    let drop = r#"ALTER TABLE "catalog_product" DROP COLUMN "brand_code" CASCADE"#;
    let before = sample(Some(reads(1)), Some(&[]));
    let after = sample(Some(reads(1)), Some(&[(drop, 1)]));
    assert_eq!(one(column(), &before, &after).status, Status::Unused);
}

#[test]
fn overall_is_in_use_before_unknown_before_unused() {
    let verdict = |status| Verdict {
        object: column(),
        status,
        summary: String::new(),
        evidence: Vec::new(),
    };
    assert_eq!(overall(&[]), Status::Unused);
    assert_eq!(
        overall(&[verdict(Status::Unused), verdict(Status::Unknown)]),
        Status::Unknown
    );
    assert_eq!(
        overall(&[verdict(Status::Unknown), verdict(Status::InUse)]),
        Status::InUse
    );
}
