//! The configuration reference (`docs/configuration.md`, linked from the
//! README) is a config stepgate accepts: the documentation cannot drift
//! from the parser.

use std::path::Path;

use stepgate::config::Config;

#[test]
fn the_documented_config_reference_parses() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let section = docs
        .split("# Configuration reference")
        .nth(1)
        .expect("a configuration reference section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block in the configuration reference");
    let config = Config::parse(
        block,
        Path::new("docs/configuration.md"),
        Path::new("/etc/stepgate"),
    )
    .unwrap_or_else(|e| panic!("the documented config does not load: {e}"));
    assert!(config.db.contains_key("ledger"));
    assert!(config.rpc.contains_key("loa_admin"));
    assert!(config.flags.contains_key("loa_finn"));
    assert!(config.pager.targets.contains_key("on-call"));
    assert_eq!(
        config.routes().expect("the documented routes parse").len(),
        1
    );
    assert_eq!(config.server.notify.as_deref(), Some("incident"));
    assert!(config.schedules[0].parsed().is_ok());
}
