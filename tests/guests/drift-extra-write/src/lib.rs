//! The drift fixture with one more write. (a fixture for the scenario and replay tests)

const VARIANT: Variant = Variant {
    threshold: 100,
    page_first: false,
    notify: true,
};

include!("../../drift/src/playbook.rs");
