//! The service's own constants that docs/FORMAT.md quotes (the core checks its constants in
//! core/tests/conformance.rs).

const DOC: &str = include_str!("../docs/FORMAT.md");

/// The value column of the row of docs/FORMAT.md's constants table that names `code`.
fn documented(code: &str) -> String {
    let line = DOC.lines().find(|l| l.ends_with(&format!("| `{code}` |"))).unwrap_or_else(|| panic!("{code}"));
    let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
    cells[1].trim_matches('`').to_owned()
}

#[test]
fn status_list_lifetime_in_doc_matches_the_server() {
    assert_eq!(
        documented("server::DEFAULT_STATUS_LIST_LIFETIME"),
        epass::server::DEFAULT_STATUS_LIST_LIFETIME.num_seconds().to_string()
    );
}
