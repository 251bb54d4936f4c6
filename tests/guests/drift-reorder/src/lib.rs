//! The drift fixture with its two writes swapped. (a fixture for the scenario and replay tests)

const VARIANT: Variant = Variant {
    threshold: 100,
    page_first: true,
    notify: false,
};

include!("../../drift/src/playbook.rs");
