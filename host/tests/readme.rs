//! The configuration reference in README.md is a config stepgate accepts:
//! the documentation cannot drift from the parser.

use std::path::Path;

use stepgate::config::Config;

#[test]
fn the_readme_config_reference_parses() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md at the workspace root");
    let section = readme
        .split("## Configuration reference")
        .nth(1)
        .expect("a configuration reference section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block in the configuration reference");
    let config = Config::parse(block, Path::new("README.md"), Path::new("/etc/stepgate"))
        .unwrap_or_else(|e| panic!("the README's config does not load: {e}"));
    assert!(config.db.contains_key("ledger"));
    assert!(config.rpc.contains_key("loa_admin"));
    assert!(config.flags.contains_key("loa_finn"));
    assert!(config.pager.targets.contains_key("on-call"));
    assert_eq!(config.routes().expect("the README's routes parse").len(), 1);
    assert_eq!(config.server.notify.as_deref(), Some("incident"));
    assert!(config.schedules[0].parsed().is_ok());
}
