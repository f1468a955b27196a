//! Database identifier naming the way Django derives it: default table names,
//! auto-created many-to-many join tables and `truncate_name` shortening.

use md5::{Digest, Md5};

use super::Engine;

/// Django's `strip_quotes`: drops one pair of surrounding double quotes.
pub(crate) fn strip_quotes(name: &str) -> &str {
    if name.len() >= 2 && name.starts_with('"') && name.ends_with('"') {
        &name[1..name.len() - 1]
    } else {
        name
    }
}

/// Django's `truncate_name(identifier, length, hash_len=4)` (5.2,
/// django/db/backends/utils.py). Lengths count characters as Python does.
pub(crate) fn truncate_name(identifier: &str, length: Option<usize>) -> String {
    const HASH_LEN: usize = 4;
    // split_identifier: splits only on exactly one `"."`, then strips every
    // surrounding `"` (str.strip('"'), not strip_quotes).
    let mut parts = identifier.split("\".\"");
    let (namespace, name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(ns), Some(name), None) => (ns.trim_matches('"'), name.trim_matches('"')),
        _ => ("", identifier.trim_matches('"')),
    };
    let Some(length) = length else {
        return identifier.to_string();
    };
    if name.chars().count() <= length {
        return identifier.to_string();
    }
    let digest = Md5::digest(name.as_bytes());
    let hex: String = digest
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .take(HASH_LEN)
        .map(|n| char::from_digit(u32::from(n), 16).unwrap_or('0'))
        .collect();
    let kept: String = name.chars().take(length.saturating_sub(HASH_LEN)).collect();
    if namespace.is_empty() {
        format!("{kept}{hex}")
    } else {
        format!("{namespace}\".\"{kept}{hex}")
    }
}

/// `Options.db_table` when the model sets none.
pub(crate) fn default_table(app: &str, model_lower: &str, engine: Engine) -> String {
    truncate_name(
        &format!("{app}_{model_lower}"),
        super::max_name_length(engine),
    )
}

/// `ManyToManyField._get_m2m_db_table` for an auto-created join table.
pub(crate) fn m2m_table(model_table: &str, field: &str, engine: Engine) -> String {
    truncate_name(
        &format!("{}_{field}", strip_quotes(model_table)),
        super::max_name_length(engine),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed with Django 5.2's django.db.backends.utils.truncate_name.
    #[test]
    fn truncate_matches_django() {
        let long = "catalog_productwithaveryveryverylongname_relatedcategorieswithlongname";
        assert_eq!(
            truncate_name(long, Some(63)),
            "catalog_productwithaveryveryverylongname_relatedcategoriesw7ce6"
        );
        assert_eq!(
            truncate_name(long, Some(64)),
            "catalog_productwithaveryveryverylongname_relatedcategorieswi7ce6"
        );
        assert_eq!(truncate_name(long, None), long);
        let a70 = "a".repeat(70);
        assert_eq!(
            truncate_name(&a70, Some(63)),
            format!("{}0f5c", "a".repeat(59))
        );
        let unicode = format!("shop_ürünkategorisi_{}", "x".repeat(60));
        assert_eq!(
            truncate_name(&unicode, Some(63)),
            format!("shop_ürünkategorisi_{}f918", "x".repeat(39))
        );
    }

    #[test]
    fn short_names_are_untouched() {
        assert_eq!(
            truncate_name("shop_product_tags", Some(63)),
            "shop_product_tags"
        );
        assert_eq!(truncate_name("\"quoted\"", Some(63)), "\"quoted\"");
    }

    #[test]
    fn namespaced_names_truncate_only_the_table() {
        let name = format!("\"myschema\".\"{}\"", "t".repeat(70));
        assert_eq!(
            truncate_name(&name, Some(63)),
            format!("myschema\".\"{}8b21", "t".repeat(59))
        );
    }

    #[test]
    fn all_surrounding_quotes_are_stripped_before_measuring() {
        let name = format!("\"\"x\"{}\"", "q".repeat(70));
        assert_eq!(
            truncate_name(&name, Some(63)),
            format!("x\"{}1715", "q".repeat(57))
        );
    }

    #[test]
    fn long_default_model_tables_are_truncated() {
        let model = "thisisanextremelylongmodelnamethatgoesonandonforeverandever";
        assert_eq!(
            default_table("catalog", model, Engine::Postgres),
            "catalog_thisisanextremelylongmodelnamethatgoesonandonforeved21d"
        );
        assert_eq!(
            default_table("catalog", model, Engine::Mysql),
            "catalog_thisisanextremelylongmodelnamethatgoesonandonforeverd21d"
        );
        assert_eq!(
            default_table("catalog", model, Engine::Sqlite),
            format!("catalog_{model}")
        );
    }

    #[test]
    fn m2m_tables() {
        assert_eq!(
            m2m_table("shop_product", "tags", Engine::Postgres),
            "shop_product_tags"
        );
        assert_eq!(
            m2m_table("\"legacy_products\"", "tags", Engine::Postgres),
            "legacy_products_tags"
        );
        assert_eq!(
            default_table("shop", "product", Engine::Sqlite),
            "shop_product"
        );
    }
}
