//! The drift fixture as written. (a fixture for the scenario and replay tests)

const VARIANT: Variant = Variant {
    threshold: 100,
    page_first: false,
    notify: false,
};

include!("playbook.rs");
