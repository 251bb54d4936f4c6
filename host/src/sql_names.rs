//! Table names as the database engine resolves them.
//!
//! A grant of `escrow_holds` must cover exactly the table the engine means
//! by `escrow_holds` and nothing else: not `archive.escrow_holds`, not a
//! quoted `"Escrow_Holds"` on PostgreSQL (a different table there). So the
//! SQL checker, the scope, the gate and the engine-side checks all compare
//! one canonical text made here:
//!
//! - the engine's default schema (`public` on PostgreSQL, `main` on SQLite)
//!   is left out, any other schema is kept: `escrow_holds`,
//!   `archive.escrow_holds`;
//! - case is folded as the engine folds it: PostgreSQL lowercases unquoted
//!   identifiers and keeps quoted ones exactly; SQLite compares names
//!   without regard to ASCII case;
//! - a part that is not a plain lowercase identifier is written quoted
//!   (`"Escrow Holds"`), so no two tables share a canonical text.
//!
//! Functions are named here too ([`FunctionName`]), for the engine-side
//! check of what a statement calls; their schema is kept as written,
//! default or not, because PostgreSQL looks an unqualified function up in
//! `pg_catalog` first and `public.f` in `public` only.
//!
//! This module only names tables and functions; it decides nothing. A
//! leaf: the config checks grants with it, the scope, the SQL checker and
//! the database drivers compare with it.

/// Which SQL grammar a database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlDialect {
    Sqlite,
    Postgres,
}

/// One part of a name as written: its text and whether it was quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub value: String,
    pub quoted: bool,
}

impl Ident {
    pub fn plain(value: &str) -> Ident {
        Ident {
            value: value.to_owned(),
            quoted: false,
        }
    }
}

/// The schema an unqualified table name means.
pub fn default_schema(dialect: SqlDialect) -> &'static str {
    match dialect {
        SqlDialect::Sqlite => "main",
        SqlDialect::Postgres => "public",
    }
}

/// The name of one identifier as the engine stores it.
fn fold(dialect: SqlDialect, ident: &Ident) -> String {
    match dialect {
        SqlDialect::Sqlite => ident.value.to_ascii_lowercase(),
        SqlDialect::Postgres if ident.quoted => ident.value.clone(),
        SqlDialect::Postgres => ident.value.to_ascii_lowercase(),
    }
}

/// A folded identifier, quoted unless it is a plain lowercase word.
fn render(part: &str) -> String {
    let plain = !part.is_empty()
        && part
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && part
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        part.to_owned()
    } else {
        format!("\"{}\"", part.replace('"', "\"\""))
    }
}

/// The canonical text of a table named by `parts` (`[table]` or
/// `[schema, table]`) as written in SQL; `None` for any other shape (a
/// database-qualified name, an empty part), which a caller refuses.
pub fn canonical(dialect: SqlDialect, parts: &[Ident]) -> Option<String> {
    if parts.iter().any(|p| p.value.is_empty()) {
        return None;
    }
    match parts {
        [table] => Some(render(&fold(dialect, table))),
        [schema, table] => Some(from_engine(
            dialect,
            &fold(dialect, schema),
            &fold(dialect, table),
        )),
        _ => None,
    }
}

/// A function a statement calls, folded as the engine folds it: its
/// schema if the SQL named one, and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionName {
    pub schema: Option<String>,
    pub name: String,
}

impl FunctionName {
    /// The function named by `parts` (`[f]`, `[schema, f]` or
    /// `[database, schema, f]`); `None` for any other shape.
    pub fn from_parts(dialect: SqlDialect, parts: &[Ident]) -> Option<FunctionName> {
        if parts.iter().any(|p| p.value.is_empty()) {
            return None;
        }
        let (schema, name) = match parts {
            [name] => (None, name),
            [schema, name] | [_, schema, name] => (Some(fold(dialect, schema)), name),
            _ => return None,
        };
        Some(FunctionName {
            schema,
            name: fold(dialect, name),
        })
    }

    /// An unqualified function.
    pub fn bare(name: &str) -> FunctionName {
        FunctionName {
            schema: None,
            name: name.to_owned(),
        }
    }

    /// The bytes it takes (for bounded caches).
    pub fn len(&self) -> usize {
        self.name.len() + self.schema.as_ref().map_or(0, String::len)
    }

    /// Whether the name is empty (never, for a parsed one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for FunctionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{}.{}", render(schema), render(&self.name)),
            None => write!(f, "{}", render(&self.name)),
        }
    }
}

/// The canonical text of a table the engine itself reports (schema and
/// name exactly as stored).
pub fn from_engine(dialect: SqlDialect, schema: &str, table: &str) -> String {
    let (schema, table) = match dialect {
        SqlDialect::Sqlite => (schema.to_ascii_lowercase(), table.to_ascii_lowercase()),
        SqlDialect::Postgres => (schema.to_owned(), table.to_owned()),
    };
    if schema == default_schema(dialect) {
        render(&table)
    } else {
        format!("{}.{}", render(&schema), render(&table))
    }
}

/// The canonical text of a table as an operator writes it in the config
/// (a grant's `tables`, a gate key): `table` or `schema.table`, each part
/// plain or in double quotes.
pub fn parse_config(dialect: SqlDialect, text: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    loop {
        let (ident, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) if quoted[i + 1..].starts_with('"') => {
                        value.push('"');
                        chars.next();
                    }
                    Some((i, '"')) => break Some(i + 1),
                    Some((_, c)) => value.push(c),
                    None => break None,
                }
            };
            let end = end.ok_or_else(|| format!("`{text}`: a quote is not closed"))?;
            (
                Ident {
                    value,
                    quoted: true,
                },
                &quoted[end..],
            )
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            (Ident::plain(rest[..end].trim()), &rest[end..])
        };
        parts.push(ident);
        match after.strip_prefix('.') {
            Some(next) => rest = next,
            None if after.trim().is_empty() => break,
            None => return Err(format!("`{text}`: unexpected text after a quoted name")),
        }
    }
    canonical(dialect, &parts)
        .ok_or_else(|| format!("`{text}` is not a table name: write `table` or `schema.table`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: SqlDialect = SqlDialect::Postgres;
    const S: SqlDialect = SqlDialect::Sqlite;

    fn q(v: &str) -> Ident {
        Ident {
            value: v.into(),
            quoted: true,
        }
    }

    #[test]
    fn default_schema_is_left_out_and_others_kept() {
        let plain = canonical(P, &[Ident::plain("Escrow_Holds")]);
        assert_eq!(plain.as_deref(), Some("escrow_holds"));
        let public = canonical(P, &[Ident::plain("public"), Ident::plain("escrow_holds")]);
        assert_eq!(public, plain);
        let archive = canonical(P, &[Ident::plain("archive"), Ident::plain("escrow_holds")]);
        assert_eq!(archive.as_deref(), Some("archive.escrow_holds"));
        let main = canonical(S, &[Ident::plain("MAIN"), Ident::plain("escrow_holds")]);
        assert_eq!(main.as_deref(), Some("escrow_holds"));
        // `main` is only SQLite's default; on PostgreSQL it is a schema.
        let pg_main = canonical(P, &[Ident::plain("main"), Ident::plain("t")]);
        assert_eq!(pg_main.as_deref(), Some("main.t"));
        assert_eq!(
            canonical(S, &[Ident::plain("temp"), Ident::plain("t")]).as_deref(),
            Some("temp.t")
        );
    }

    #[test]
    fn case_folds_as_the_engine_folds_it() {
        assert_eq!(
            canonical(P, &[q("Escrow_Holds")]).as_deref(),
            Some("\"Escrow_Holds\"")
        );
        assert_eq!(
            canonical(S, &[q("Escrow_Holds")]).as_deref(),
            Some("escrow_holds")
        );
        assert_eq!(
            canonical(P, &[q("a.b")]).as_deref(),
            Some("\"a.b\""),
            "a dot inside quotes stays one part"
        );
        assert_eq!(from_engine(P, "public", "Escrow_Holds"), "\"Escrow_Holds\"");
        assert_eq!(from_engine(S, "main", "Escrow_Holds"), "escrow_holds");
    }

    #[test]
    fn other_shapes_are_refused() {
        let parts = [Ident::plain("db"), Ident::plain("s"), Ident::plain("t")];
        assert_eq!(canonical(P, &parts), None);
        assert_eq!(canonical(P, &[Ident::plain("")]), None);
    }

    #[test]
    fn config_text_parses_like_sql() {
        assert_eq!(parse_config(P, "escrow_holds").unwrap(), "escrow_holds");
        assert_eq!(
            parse_config(P, "public.Escrow_Holds").unwrap(),
            "escrow_holds"
        );
        assert_eq!(
            parse_config(P, "pgmq.q_arbitration_run").unwrap(),
            "pgmq.q_arbitration_run"
        );
        assert_eq!(
            parse_config(P, "\"Odd \"\"Name\"\"\"").unwrap(),
            "\"Odd \"\"Name\"\"\""
        );
        assert_eq!(parse_config(P, "\"a.b\".c").unwrap(), "\"a.b\".c");
        assert!(parse_config(P, "a.b.c").is_err());
        assert!(parse_config(P, "\"open").is_err());
        assert!(parse_config(P, "").is_err());
        assert!(parse_config(P, "a.").is_err());
    }
}
