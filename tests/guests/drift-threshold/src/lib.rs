//! The drift fixture with its threshold moved. (a fixture for the scenario and replay tests)

const VARIANT: Variant = Variant {
    threshold: 1000,
    page_first: false,
    notify: false,
};

include!("../../drift/src/playbook.rs");
