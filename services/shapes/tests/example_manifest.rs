//! The proposed example manifest parses, has a few dozen jobs, and only asks for captions the
//! model was trained on (template and vocabulary), at the model's native size.

use pixelfarm_core::parse_manifest;
use pixelfarm_shapes::data::{Attributes, SIDE};

#[test]
fn example_manifest_asks_only_for_known_captions() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/shapes/example-manifest.yaml"
    );
    let batch = parse_manifest(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(batch.model.as_str(), pixelfarm_shapes::MODEL_NAME);
    assert!(
        (24..=64).contains(&batch.jobs.len()),
        "{} jobs",
        batch.jobs.len()
    );
    let mut held_out = 0;
    for j in batch.jobs.iter() {
        let a = Attributes::parse(j.params.prompt.as_str())
            .unwrap_or_else(|| panic!("unknown caption {:?}", j.params.prompt.as_str()));
        held_out += usize::from(a.held_out());
        assert_eq!(
            (j.params.width, j.params.height),
            (SIDE as u32, SIDE as u32)
        );
    }
    assert!(held_out > 0, "the demo shows some held-out combinations");
}
