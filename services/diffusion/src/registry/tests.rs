use super::*;

const YAML: &str = r#"
cache_dir: /var/cache/pf
max_loaded: 2
models:
  sd15:
    family: sd15
    source: s3://models/sd/v15/
    files:
      unet/diffusion_pytorch_model.safetensors: 0000000000000000000000000000000000000000000000000000000000000001
      vae/diffusion_pytorch_model.safetensors: 0000000000000000000000000000000000000000000000000000000000000002
      text_encoder/model.safetensors: 0000000000000000000000000000000000000000000000000000000000000003
      tokenizer/tokenizer.json: 0000000000000000000000000000000000000000000000000000000000000004
  dreamy:
    family: sd15
    source: file:///models/dreamy
    checkpoint: dreamy.safetensors
    files:
      dreamy.safetensors: 0000000000000000000000000000000000000000000000000000000000000005
      tokenizer/tokenizer.json: 0000000000000000000000000000000000000000000000000000000000000004
"#;

fn name(s: &str) -> ModelName {
    ModelName::parse(s).unwrap()
}

#[test]
fn registry_deserializes_from_yaml_and_plans_downloads() {
    let cfg: RegistryConfig = serde_yaml::from_str(YAML).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.max_batch, DEFAULT_MAX_BATCH);
    assert_eq!(
        cfg.local_dir(&name("sd15")).unwrap(),
        PathBuf::from("/var/cache/pf/sd15")
    );
    assert_eq!(
        cfg.local_dir(&name("dreamy")).unwrap(),
        PathBuf::from("/models/dreamy")
    );
    let remote = cfg.remote_files(&name("sd15")).unwrap();
    assert_eq!(remote.len(), 4);
    assert_eq!(remote[0].bucket, "models");
    assert!(
        remote
            .iter()
            .any(|r| r.key == "sd/v15/unet/diffusion_pytorch_model.safetensors")
    );
    assert!(cfg.remote_files(&name("dreamy")).unwrap().is_empty());
    let e = cfg.entry(&name("nope")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert!(e.to_string().contains("dreamy, sd15"), "{e}");
}

#[test]
fn limits_default_from_the_family_and_the_registry() {
    let cfg: RegistryConfig = serde_yaml::from_str(YAML).unwrap();
    let l = cfg.limits(&name("sd15")).unwrap();
    assert_eq!((l.max_width, l.max_height), (1024, 1024), "twice 512");
    assert_eq!(l.max_steps, DEFAULT_MAX_STEPS);
    assert_eq!(l.max_output_side, DEFAULT_MAX_OUTPUT_SIDE);
    assert_eq!(l.max_batch, DEFAULT_MAX_BATCH);

    let set = YAML.replacen(
        "    family: sd15\n",
        "    family: sd15\n    limits: {max_width: 768, max_steps: 40, max_batch: 1}\n",
        1,
    );
    let cfg: RegistryConfig = serde_yaml::from_str(&set).unwrap();
    cfg.validate().unwrap();
    let l = cfg.limits(&name("sd15")).unwrap();
    assert_eq!(
        (l.max_width, l.max_height, l.max_steps, l.max_batch),
        (768, 1024, 40, 1)
    );

    let zero = YAML.replacen(
        "    family: sd15\n",
        "    family: sd15\n    limits: {max_steps: 0}\n",
        1,
    );
    let e = serde_yaml::from_str::<RegistryConfig>(&zero)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model `sd15`") && e.contains("limits.max_steps is 0"),
        "{e}"
    );
    let unknown = YAML.replacen(
        "    family: sd15\n",
        "    family: sd15\n    limits: {max_pixels: 1}\n",
        1,
    );
    assert!(serde_yaml::from_str::<RegistryConfig>(&unknown).is_err());
}

#[test]
fn weights_id_changes_with_any_file_hash() {
    let cfg: RegistryConfig = serde_yaml::from_str(YAML).unwrap();
    let mut e = cfg.entry(&name("sd15")).unwrap().clone();
    let a = e.weights_id();
    assert_eq!(a.len(), 64);
    e.files.insert(layout::VAE.into(), "f".repeat(64));
    assert_ne!(a, e.weights_id());
}

#[test]
fn invalid_entries_are_refused_with_the_reason() {
    let bad_sha = YAML.replace(
        "0000000000000000000000000000000000000000000000000000000000000001",
        "XYZ",
    );
    let cfg: RegistryConfig = serde_yaml::from_str(&bad_sha).unwrap();
    let e = cfg.validate().unwrap_err().to_string();
    assert!(
        e.contains("model `sd15`") && e.contains("64 lowercase hex"),
        "{e}"
    );

    let missing = YAML.replace("      text_encoder/model.safetensors: 0000000000000000000000000000000000000000000000000000000000000003\n", "");
    let cfg: RegistryConfig = serde_yaml::from_str(&missing).unwrap();
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("text_encoder/model.safetensors"), "{e}");

    let e = Source::parse("http://x").unwrap_err().to_string();
    assert!(e.contains("accepted"), "{e}");
    assert!(
        serde_yaml::from_str::<RegistryConfig>(&YAML.replace("family: sd15", "family: sd3"))
            .is_err()
    );
}

#[test]
fn read_verified_refuses_a_mismatch_naming_file_and_hashes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tokenizer")).unwrap();
    std::fs::write(dir.path().join(layout::TOKENIZER), b"{}").unwrap();
    let good = sha256_file(&dir.path().join(layout::TOKENIZER)).unwrap();
    let mut entry = ModelEntry {
        family: Family::Tiny,
        source: Source::File(dir.path().to_path_buf()),
        checkpoint: None,
        files: BTreeMap::from([(layout::TOKENIZER.to_string(), good.clone())]),
        limits: LimitsConfig::default(),
    };
    assert_eq!(
        read_verified(&entry, dir.path(), layout::TOKENIZER).unwrap(),
        b"{}"
    );
    entry.files.insert(layout::TOKENIZER.into(), "a".repeat(64));
    let e = read_verified(&entry, dir.path(), layout::TOKENIZER).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent);
    let msg = e.to_string();
    assert!(
        msg.contains("tokenizer.json") && msg.contains(&"a".repeat(64)) && msg.contains(&good),
        "{msg}"
    );
    let e = read_verified(&entry, dir.path(), layout::VAE).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent);
}
