//! Owns the vault's end-to-end tests: whole snapshots written, published,
//! listed, read back, damaged and verified. It must never depend on anything
//! outside a per-test temporary directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use proptest::prelude::*;

use super::encoding::tests::arb_value;
use super::*;

fn meta(migration: Option<&str>) -> SnapshotMeta {
    SnapshotMeta {
        migration: migration.map(str::to_owned),
        rollback_command: None,
        reason: if migration.is_some() {
            Reason::Plan
        } else {
            Reason::AdHoc
        },
        environment: "test".into(),
        database: DatabaseInfo {
            kind: Engine::Postgres,
            server_version: "16.4".into(),
        },
    }
}

fn column(name: &str, declared_type: &str) -> ColumnInfo {
    ColumnInfo {
        name: name.into(),
        declared_type: declared_type.into(),
        nullable: true,
    }
}

fn table_spec(table: &str, width: usize) -> ObjectSpec {
    ObjectSpec {
        table: table.into(),
        kind: ObjectKind::Table,
        columns: vec![],
        all_columns: (0..width)
            .map(|i| column(&format!("c{i}"), "text"))
            .collect(),
        primary_key: vec![],
        foreign_keys: vec![],
        generated_key: None,
    }
}

fn rows_of(n: i64) -> Vec<Vec<Value>> {
    (0..n)
        .map(|i| {
            vec![
                Value::Int(i),
                Value::Text(format!("name-{i}")),
                if i % 3 == 0 {
                    Value::Null
                } else {
                    Value::Decimal(format!("{i}.50"))
                },
            ]
        })
        .collect()
}

/// Writes one snapshot of one whole-table object per entry of `objects`.
fn snapshot(
    vault: &Vault,
    migration: Option<&str>,
    objects: &[Vec<Vec<Value>>],
) -> SnapshotSummary {
    let mut writer = vault.begin(meta(migration)).expect("begin");
    for (i, rows) in objects.iter().enumerate() {
        let width = rows.first().map_or(1, Vec::len);
        let mut object = writer
            .object(table_spec(&format!("public.t{i}"), width))
            .expect("object");
        for row in rows {
            object.write_row(row).expect("write_row");
        }
        object.finish().expect("finish");
    }
    writer.commit().expect("commit")
}

fn read_back(vault: &Vault, id: &SnapshotId, index: usize) -> Vec<Vec<Value>> {
    vault
        .read_object(id, index)
        .expect("read_object")
        .collect::<Result<_, _>>()
        .expect("rows read back")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn tmp_entries(vault: &Vault) -> usize {
    fs::read_dir(vault.path().join(".tmp"))
        .expect("tmp dir")
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn arbitrary_rows_survive_a_snapshot(
        width in 1usize..5,
        seed_rows in proptest::collection::vec(proptest::collection::vec(arb_value(), 5), 0..40),
    ) {
        let rows: Vec<Vec<Value>> = seed_rows.into_iter().map(|mut r| { r.truncate(width); r }).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::open(dir.path()).expect("open");
        let summary = snapshot(&vault, Some("app.0001_x"), std::slice::from_ref(&rows));
        prop_assert_eq!(summary.rows, rows.len() as u64);
        prop_assert_eq!(read_back(&vault, &summary.id, 0), rows);
        prop_assert!(vault.verify(&summary.id).expect("verify").is_ok());
    }
}

#[test]
fn huge_and_awkward_values_survive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let huge_text: String = "ünïcødé \0 🦀 ".repeat(1 << 20);
    let huge_bytes: Vec<u8> = (0..9_000_000u32).map(|i| (i % 251) as u8).collect();
    let rows = vec![
        vec![
            Value::Text(huge_text),
            Value::Bytes(huge_bytes),
            Value::Float(f64::NAN),
        ],
        vec![
            Value::Text(String::new()),
            Value::Bytes(vec![]),
            Value::Float(-0.0),
        ],
        vec![Value::Null, Value::Null, Value::Float(f64::NEG_INFINITY)],
        vec![
            Value::Array(vec![]),
            Value::Array(vec![Value::Null]),
            Value::Array(vec![
                Value::Array(vec![Value::Text("\0".into()), Value::Null]),
                Value::Array(vec![]),
            ]),
        ],
        vec![
            Value::UInt(u64::MAX),
            Value::Int(i64::MIN),
            Value::Other {
                type_name: "inet".into(),
                text: "::1/128".into(),
            },
        ],
    ];
    let summary = snapshot(&vault, None, std::slice::from_ref(&rows));
    assert_eq!(read_back(&vault, &summary.id, 0), rows);
    assert!(vault.verify(&summary.id).expect("verify").is_ok());
}

#[test]
fn columns_object_stores_key_then_dropped_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let spec = ObjectSpec {
        table: "public.users".into(),
        kind: ObjectKind::Columns,
        columns: vec!["legacy_email".into(), "tenant".into()],
        all_columns: vec![
            column("tenant", "int"),
            column("id", "bigint"),
            column("legacy_email", "text"),
        ],
        primary_key: vec!["tenant".into(), "id".into()],
        foreign_keys: vec![ForeignKey {
            columns: vec!["tenant".into()],
            referenced_table: "public.tenants".into(),
            referenced_columns: vec!["id".into()],
        }],
        generated_key: None,
    };
    let mut writer = vault
        .begin(meta(Some("users.0007_drop_email")))
        .expect("begin");
    let mut object = writer.object(spec).expect("object");
    assert_eq!(object.row_columns(), ["tenant", "id", "legacy_email"]);
    let err = object
        .write_row(&[Value::Int(1), Value::Int(2)])
        .expect_err("wrong width");
    assert!(
        err.to_string().contains("tenant, id, legacy_email"),
        "{err}"
    );
    object
        .write_row(&[Value::Int(1), Value::Int(2), Value::Text("a@b".into())])
        .expect("write");
    assert_eq!(object.rows(), 1);
    let entry = object.finish().expect("finish");
    assert_eq!(entry.row_columns, ["tenant", "id", "legacy_email"]);
    let summary = writer.commit().expect("commit");
    let shown = vault.show(&summary.id).expect("show");
    assert_eq!(shown, summary.manifest);
    assert_eq!(
        shown.objects[0].foreign_keys[0].referenced_table,
        "public.tenants"
    );
    let rows = vault.read_object(&summary.id, 0).expect("read");
    assert_eq!(rows.entry().kind, ObjectKind::Columns);
}

#[test]
fn whole_table_rows_put_the_key_first_like_the_adapters() {
    let spec = ObjectSpec {
        table: "t".into(),
        kind: ObjectKind::Table,
        columns: vec![],
        all_columns: vec![
            column("a", "text"),
            column("id", "int"),
            column("b", "text"),
        ],
        primary_key: vec!["id".into()],
        foreign_keys: vec![],
        generated_key: Some("id".into()),
    };
    assert_eq!(spec.row_columns(), ["id", "a", "b"]);
    let mut keyless = spec.clone();
    keyless.primary_key.clear();
    assert_eq!(keyless.row_columns(), ["a", "id", "b"]);
}

#[test]
fn invalid_specs_and_meta_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let mut planned_without_migration = meta(None);
    planned_without_migration.reason = Reason::Plan;
    assert!(matches!(
        vault.begin(planned_without_migration),
        Err(VaultError::InvalidMeta { .. })
    ));
    let mut writer = vault.begin(meta(None)).expect("begin");
    let base = table_spec("t", 2);
    let mut with_columns = base.clone();
    with_columns.columns = vec!["c0".into()];
    let mut no_key = base.clone();
    no_key.kind = ObjectKind::Columns;
    no_key.columns = vec!["c0".into()];
    let mut unknown_column = no_key.clone();
    unknown_column.primary_key = vec!["nope".into()];
    let mut duplicate = base.clone();
    duplicate.all_columns.push(column("c0", "int"));
    let mut bad_fk = base.clone();
    bad_fk.foreign_keys = vec![ForeignKey {
        columns: vec!["c0".into()],
        referenced_table: "p".into(),
        referenced_columns: vec![],
    }];
    let mut bad_generated = base.clone();
    bad_generated.generated_key = Some("nope".into());
    for spec in [
        with_columns,
        no_key,
        unknown_column,
        duplicate,
        bad_fk,
        bad_generated,
    ] {
        assert!(
            matches!(writer.object(spec), Err(VaultError::InvalidObject { .. })),
            "accepted an invalid spec"
        );
    }
    // Refused specs leave no slot behind, so the snapshot still commits.
    writer.commit().expect("commit with no objects");
}

#[test]
fn list_show_and_find_for_migration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let first = snapshot(&vault, Some("app.0001_a"), &[rows_of(3)]);
    let second = snapshot(&vault, Some("app.0002_b"), &[rows_of(5), rows_of(0)]);
    let third = snapshot(&vault, Some("app.0001_a"), &[rows_of(7)]);
    let ad_hoc = snapshot(&vault, None, &[rows_of(1)]);

    let listed = vault.list().expect("list");
    let ids: Vec<_> = listed.iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        ids,
        [&first.id, &second.id, &third.id, &ad_hoc.id].map(Clone::clone)
    );
    assert!(listed.iter().all(|e| e.complete && e.problem.is_none()));
    assert_eq!(listed[1].objects.len(), 2);
    assert_eq!(listed[1].objects[0].rows, 5);
    assert_eq!(listed[1].objects[1].rows, 0);
    assert_eq!(listed[1].objects[0].table, "public.t0");
    assert_eq!(listed[3].reason, Some(Reason::AdHoc));
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at)
    );

    let found = vault
        .find_for_migration("app.0001_a")
        .expect("find")
        .expect("a snapshot");
    assert_eq!(found.id, third.id);
    assert!(
        vault
            .find_for_migration("app.9999_none")
            .expect("find")
            .is_none()
    );

    let shown = vault.show(&second.id).expect("show");
    assert_eq!(shown, second.manifest);
    assert!(shown.completed_at >= shown.created_at);
    assert_eq!(shown.tool_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(read_back(&vault, &second.id, 0), rows_of(5));
    assert!(read_back(&vault, &second.id, 1).is_empty());
    assert!(matches!(
        vault.read_object(&second.id, 2),
        Err(VaultError::UnknownObject { count: 2, .. })
    ));
}

#[test]
fn unknown_and_invalid_ids_get_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let id = SnapshotId::parse("01JD3Q1Z8G7N9V0000000000AB").expect("valid id");
    let err = vault.show(&id).expect_err("unknown");
    let message = err.to_string();
    assert!(message.contains("01JD3Q1Z8G7N9V0000000000AB"), "{message}");
    assert!(message.contains("dropguard snapshots list"), "{message}");
    assert!(matches!(
        "../../etc".parse::<SnapshotId>(),
        Err(VaultError::InvalidId { .. })
    ));
}

#[test]
fn verify_detects_flipped_byte_truncation_missing_file_and_swap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let objects = [
        rows_of(2000),
        rows_of(2000),
        rows_of(2000),
        rows_of(10),
        rows_of(9),
    ];
    let summary = snapshot(&vault, Some("app.0003_c"), &objects);
    let report = vault.verify(&summary.id).expect("verify");
    assert!(report.is_ok(), "{report:?}");
    let file = |i: usize| summary.path.join(&summary.manifest.objects[i].file);

    // Object 0: one flipped bit in the middle of the compressed data.
    let mut bytes = fs::read(file(0)).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fs::write(file(0), &bytes).expect("write");
    // Object 1: cut short.
    let bytes = fs::read(file(1)).expect("read");
    fs::write(file(1), &bytes[..bytes.len() * 2 / 3]).expect("write");
    // Object 2: gone.
    fs::remove_file(file(2)).expect("remove");
    // Object 3: a well-formed file with different (no longer) rows.
    fs::copy(file(4), file(3)).expect("copy");

    let report = vault.verify(&summary.id).expect("verify");
    assert!(!report.is_ok());
    let statuses: Vec<_> = report.objects.iter().map(|o| o.status.clone()).collect();
    assert!(
        matches!(statuses[0], ObjectStatus::Corrupt { .. }),
        "{:?}",
        statuses[0]
    );
    match &statuses[1] {
        ObjectStatus::Corrupt { row, detail } => {
            assert!(*row >= 1, "{row}");
            assert!(detail.contains("truncated"), "{detail}");
        }
        other => panic!("truncation not reported: {other:?}"),
    }
    assert_eq!(statuses[2], ObjectStatus::FileMissing);
    match &statuses[3] {
        ObjectStatus::Mismatch { expected, found } => {
            assert_eq!(expected.rows, 10);
            assert_eq!(found.rows, 9);
        }
        other => panic!("swap not reported: {other:?}"),
    }
    assert_eq!(statuses[4], ObjectStatus::Ok);

    // Reading the damaged objects fails too, ending on an error.
    for index in 0..4 {
        let last = vault
            .read_object(&summary.id, index)
            .map(|rows| rows.last());
        assert!(
            matches!(last, Err(_) | Ok(Some(Err(_)))),
            "object {index} read without error"
        );
    }
    let mismatch = vault
        .read_object(&summary.id, 3)
        .expect("opens")
        .last()
        .expect("an item");
    let message = mismatch.expect_err("mismatch").to_string();
    assert!(message.contains(summary.id.as_str()), "{message}");
}

#[test]
fn verify_reports_changed_bytes_that_spare_the_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let summary = snapshot(&vault, None, &[rows_of(50)]);
    let file = summary.path.join(&summary.manifest.objects[0].file);
    let original = fs::read(&file).expect("read");
    // Byte 15 is zstd's window descriptor (after our 10-byte header, zstd's
    // magic and frame header descriptor): some of its bits change no row.
    let mut saw_file_changed = false;
    for bit in 0..8 {
        let mut bytes = original.clone();
        bytes[15] ^= 1 << bit;
        fs::write(&file, &bytes).expect("write");
        let report = vault.verify(&summary.id).expect("verify");
        assert!(!report.is_ok(), "bit {bit} passed verification");
        if let ObjectStatus::FileChanged { expected, found } = &report.objects[0].status {
            assert_ne!(expected, found);
            saw_file_changed = true;
            // The rows themselves still read back, verified.
            assert_eq!(read_back(&vault, &summary.id, 0), rows_of(50));
        }
    }
    assert!(saw_file_changed);
}

#[test]
fn dropped_writer_leaves_nothing_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    {
        let mut writer = vault.begin(meta(Some("app.0004_d"))).expect("begin");
        let mut object = writer.object(table_spec("t", 3)).expect("object");
        for row in rows_of(100) {
            object.write_row(&row).expect("write");
        }
        // Neither finished nor committed.
    }
    assert!(vault.list().expect("list").is_empty());
    assert_eq!(tmp_entries(&vault), 0);
    assert!(
        vault
            .find_for_migration("app.0004_d")
            .expect("find")
            .is_none()
    );
}

#[test]
fn commit_refuses_an_unfinished_object_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let mut writer = vault.begin(meta(None)).expect("begin");
    let done = writer.object(table_spec("done", 1)).expect("object");
    done.finish().expect("finish");
    let abandoned = writer.object(table_spec("abandoned", 1)).expect("object");
    drop(abandoned);
    let err = writer.commit().expect_err("must refuse");
    assert!(
        matches!(err, VaultError::ObjectNotFinished { index: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("abandoned"), "{err}");
    assert!(vault.list().expect("list").is_empty());
    assert_eq!(tmp_entries(&vault), 0);
}

#[test]
fn crash_leftovers_are_collected_but_live_writers_are_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    // What a crash mid-write leaves behind.
    let stale = dir.path().join(".tmp").join("01JD3Q1Z8G7N9V0000000000AB");
    fs::create_dir_all(&stale).expect("mkdir");
    fs::write(stale.join("000.rows.zst"), b"partial").expect("write");
    fs::write(dir.path().join(".tmp").join("junk"), b"x").expect("write");
    assert!(vault.list().expect("list").is_empty());

    let writer = vault.begin(meta(None)).expect("begin");
    // A writer is active: gc must not touch anything, stale or not.
    assert_eq!(vault.gc_incomplete().expect("gc"), 0);
    let reopened = Vault::open(dir.path()).expect("reopen");
    assert_eq!(tmp_entries(&reopened), 3);
    let summary = writer.commit().expect("commit");

    assert_eq!(reopened.gc_incomplete().expect("gc"), 2);
    assert_eq!(tmp_entries(&reopened), 0);
    let listed = reopened.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, summary.id);
}

#[test]
fn writer_killed_without_drop_is_collected_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let vault = Vault::open(dir.path()).expect("open");
        let mut writer = vault.begin(meta(None)).expect("begin");
        let mut object = writer.object(table_spec("t", 3)).expect("object");
        object.write_row(&rows_of(1)[0]).expect("write");
        // Simulate a crash: no destructors run. The leaked lock is released
        // by closing its descriptor, as process exit would.
        let id = writer.id().clone();
        std::mem::forget(object);
        std::mem::forget(writer);
        assert!(dir.path().join(".tmp").join(id.as_str()).is_dir());
        assert!(vault.list().expect("list").is_empty());
    }
    release_leaked_locks(dir.path());
    let vault = Vault::open(dir.path()).expect("reopen");
    assert_eq!(tmp_entries(&vault), 0);
    assert!(vault.list().expect("list").is_empty());
}

// Closes every descriptor this process holds on `<vault>/.lock`, which is
// what the kernel does for a crashed process.
fn release_leaked_locks(vault_dir: &Path) {
    let lock = fs::canonicalize(vault_dir.join(".lock")).expect("lock path");
    for entry in fs::read_dir("/proc/self/fd").expect("fd dir").flatten() {
        if fs::read_link(entry.path()).ok().as_deref() == Some(lock.as_path()) {
            let fd: i32 = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse().ok())
                .expect("numeric fd");
            // SAFETY: the descriptor belongs to a File we leaked with
            // mem::forget; nothing else will use or close it.
            drop(unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
    }
}

#[test]
fn permissions_are_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("vault");
    let vault = Vault::open(&root).expect("open");
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join(".tmp")), 0o700);
    assert_eq!(mode(&root.join(".lock")), 0o600);
    let mut writer = vault.begin(meta(None)).expect("begin");
    assert_eq!(mode(&root.join(".tmp").join(writer.id().as_str())), 0o700);
    let mut object = writer.object(table_spec("t", 3)).expect("object");
    object.write_row(&rows_of(1)[0]).expect("write");
    object.finish().expect("finish");
    let summary = writer.commit().expect("commit");
    assert_eq!(mode(&summary.path), 0o700);
    assert_eq!(mode(&summary.path.join("manifest.json")), 0o600);
    assert_eq!(mode(&summary.path.join("000.rows.zst")), 0o600);
    let names: Vec<_> = fs::read_dir(&summary.path)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "only the manifest and the data file: {names:?}"
    );
}

#[test]
fn a_published_snapshot_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let writer = vault.begin(meta(None)).expect("begin");
    // Something already sits where the snapshot would be published.
    let target = dir.path().join(writer.id().as_str());
    fs::create_dir(&target).expect("mkdir");
    fs::write(target.join("manifest.json"), b"precious").expect("write");
    let err = writer.commit().expect_err("must not overwrite");
    assert!(matches!(err, VaultError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        fs::read(target.join("manifest.json")).expect("read"),
        b"precious"
    );
    assert_eq!(tmp_entries(&vault), 0);
}

#[test]
fn future_and_damaged_manifests_are_never_usable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let good = snapshot(&vault, Some("app.0005_e"), &[rows_of(2)]);
    let future = snapshot(&vault, Some("app.0005_e"), &[rows_of(2)]);
    let path = future.path.join("manifest.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
    json["format"] = 2.into();
    fs::write(&path, serde_json::to_vec(&json).expect("json")).expect("write");
    let broken = snapshot(&vault, Some("app.0005_e"), &[rows_of(2)]);
    fs::remove_file(broken.path.join("manifest.json")).expect("remove");

    let err = vault.show(&future.id).expect_err("format 2");
    assert!(
        matches!(err, VaultError::UnsupportedFormat { found: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade dropguard"), "{err}");
    assert!(matches!(
        vault.show(&broken.id),
        Err(VaultError::BadManifest { .. })
    ));
    assert!(vault.verify(&broken.id).is_err());
    assert!(vault.read_object(&future.id, 0).is_err());

    let listed = vault.list().expect("list");
    let complete: Vec<_> = listed.iter().map(|e| (e.id.clone(), e.complete)).collect();
    assert_eq!(
        complete,
        [
            (good.id.clone(), true),
            (future.id.clone(), false),
            (broken.id.clone(), false)
        ]
    );
    assert!(
        listed[1]
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("format 2"))
    );
    let found = vault.find_for_migration("app.0005_e").expect("find");
    assert_eq!(found.map(|m| m.id), Some(good.id));
}

#[test]
fn object_writers_can_run_on_other_threads() {
    fn assert_send_static<T: Send + 'static>() {}
    assert_send_static::<ObjectWriter>();
    assert_send_static::<SnapshotWriter>();
    assert_send_static::<ObjectRows>();

    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let mut writer = vault.begin(meta(None)).expect("begin");
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let mut object = writer
                .object(table_spec(&format!("t{i}"), 3))
                .expect("object");
            std::thread::spawn(move || {
                for row in rows_of(500 + i) {
                    object.write_row(&row).expect("write");
                }
                object.finish().expect("finish")
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread");
    }
    let summary = writer.commit().expect("commit");
    let tables: Vec<_> = summary
        .manifest
        .objects
        .iter()
        .map(|o| o.table.as_str())
        .collect();
    assert_eq!(tables, ["t0", "t1", "t2"]);
    for i in 0..3 {
        assert_eq!(read_back(&vault, &summary.id, i), rows_of(500 + i as i64));
    }
}

fn peak_rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Fills `row` with the benchmark's i-th row: (i64, 40-char text,
/// timestamp text, decimal text, 200-byte text). `noisy` makes the 200-byte
/// text incompressible-ish instead of repetitive.
fn bench_row(i: i64, noisy: bool, row: &mut Vec<Value>) {
    const ALNUM: &[u8; 62] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    row.clear();
    row.push(Value::Int(i));
    row.push(Value::Text(format!("customer-{i:0>31}")));
    row.push(Value::TimestampTz(format!(
        "2024-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        i % 12 + 1,
        i % 28 + 1,
        i % 24,
        i % 60,
        (i / 60) % 60,
        i % 1_000_000
    )));
    row.push(Value::Decimal(format!("{}.{:02}", i / 7, i % 100)));
    let mut body = String::with_capacity(200);
    let mut state = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for k in 0..200 {
        if noisy {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            body.push(char::from(ALNUM[(state % 62) as usize]));
        } else {
            body.push(char::from(b"lorem ipsum dolor sit amet "[k % 27]));
        }
    }
    row.push(Value::Text(body));
}

/// `cargo test --release --lib -- --ignored --nocapture throughput`
#[test]
#[ignore = "measurement: run in release mode on its own"]
fn throughput_one_million_rows() {
    use std::time::Instant;
    const ROWS: i64 = 1_000_000;
    for noisy in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::open(dir.path()).expect("open");
        let spec = ObjectSpec {
            table: "public.bench".into(),
            kind: ObjectKind::Table,
            columns: vec![],
            all_columns: vec![
                column("id", "bigint"),
                column("name", "varchar(40)"),
                column("at", "timestamptz"),
                column("amount", "numeric(12,2)"),
                column("body", "text"),
            ],
            primary_key: vec!["id".into()],
            foreign_keys: vec![],
            generated_key: Some("id".into()),
        };
        let mut row = Vec::with_capacity(5);

        // What building the rows alone costs, to separate it out.
        let started = Instant::now();
        let mut raw_bytes = 0usize;
        for i in 0..ROWS {
            bench_row(i, noisy, &mut row);
            raw_bytes += std::hint::black_box(&row).len();
        }
        let build_secs = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut writer = vault.begin(meta(Some("bench.0001"))).expect("begin");
        let mut object = writer.object(spec).expect("object");
        for i in 0..ROWS {
            bench_row(i, noisy, &mut row);
            object.write_row(&row).expect("write");
        }
        object.finish().expect("finish");
        let summary = writer.commit().expect("commit");
        let write_secs = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut count = 0u64;
        for row in vault.read_object(&summary.id, 0).expect("read") {
            std::hint::black_box(row.expect("row"));
            count += 1;
        }
        let read_secs = started.elapsed().as_secs_f64();
        assert_eq!(count, ROWS as u64);

        let started = Instant::now();
        assert!(vault.verify(&summary.id).expect("verify").is_ok());
        let verify_secs = started.elapsed().as_secs_f64();
        let rate = |secs: f64| ROWS as f64 / secs;
        println!(
            "{}: write {:.0} rows/s incl. building rows ({write_secs:.2}s; building alone \
             {build_secs:.2}s, so vault alone {:.0} rows/s), read {:.0} rows/s ({read_secs:.2}s), \
             verify {verify_secs:.2}s, {:.1} MB compressed, peak RSS so far {} MiB",
            if noisy {
                "noisy 200-byte text"
            } else {
                "repetitive 200-byte text"
            },
            rate(write_secs),
            rate(write_secs - build_secs),
            rate(read_secs),
            summary.compressed_bytes as f64 / 1e6,
            peak_rss_kib() / 1024
        );
        assert!(raw_bytes > 0);
    }
}

#[test]
fn a_vault_opened_read_only_lists_and_verifies_but_creates_and_cleans_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("vault");
    assert!(Vault::open_read_only(&missing).is_err());
    assert!(!missing.exists(), "opening read-only created the vault");

    let vault = Vault::open(&missing).expect("open");
    let summary = snapshot(&vault, Some("app.0002_drop"), &[rows_of(3)]);
    // A writer's staging directory, as a crash would leave it.
    fs::create_dir(missing.join(".tmp").join("crashed")).expect("staging dir");
    fs::remove_file(missing.join(".lock")).ok();

    let read = Vault::open_read_only(&missing).expect("open read-only");
    let listed = read.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].complete);
    assert!(read.verify(&summary.id).expect("verify").is_ok());
    assert_eq!(tmp_entries(&read), 1, "read-only opening cleaned up");
    assert!(
        !missing.join(".lock").exists(),
        "read-only opening wrote a lock file"
    );
}
