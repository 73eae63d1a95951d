//! The head file format of docs/FORMAT.md as other tools write it: a file written by PyTorch
//! (`safetensors.torch.save_file(module.state_dict(), path, metadata=...)`, by
//! scripts/export_heads.py) loads as is, and its heads compute what PyTorch computed; the worked
//! example of docs/FORMAT.md is what hydrant writes.

use hydrant::train::{Array, Network};
use hydrant::{HeadSet, Tensor};
use hydrant_tests::{assert_close, fixture, npy};

fn python_heads() -> HeadSet {
    HeadSet::load(fixture("train/python_heads.safetensors")).unwrap()
}

fn infer(set: &HeadSet, name: &str, x: &Tensor) -> Tensor {
    let head = set.get(name).unwrap_or_else(|| panic!("no head {name}"));
    Network::<f32>::new(head).unwrap().infer(Array::from_tensor(x).unwrap()).unwrap().to_tensor()
}

#[test]
fn heads_written_by_pytorch_load_as_is_and_match_its_outputs() {
    let set = python_heads();
    let names: Vec<&str> = set.heads.iter().map(|h| h.name()).collect();
    assert_eq!(names, ["cls", "emb", "seg", "reg"]);
    let pooled = npy("train/python_heads_pooled.npy");
    let features = npy("train/python_heads_features.npy");
    for head in &set.heads {
        let x = match head.spec().input() {
            "pooled" => &pooled,
            "features" => &features,
            other => panic!("unexpected input {other}"),
        };
        let want = npy(&format!("train/python_heads_out_{}.npy", head.name()));
        let got = infer(&set, head.name(), x);
        assert_close(&format!("head {} vs PyTorch", head.name()), &got, &want, 1e-5);
    }
    // Every layer kind of the vocabulary is in the file.
    let mut kinds: Vec<&str> =
        set.heads.iter().flat_map(|h| h.spec().layers.iter().map(|l| l.kind())).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), 16, "{kinds:?}");
}

#[test]
fn pytorch_state_is_kept_and_a_resave_is_bit_exact() {
    let set = python_heads();
    let seg = set.get("seg").unwrap();
    // BatchNorm's running statistics and counter come from the state_dict, not defaults.
    let counter = seg.tensor("1.num_batches_tracked").unwrap();
    assert_eq!(counter.as_slice::<i64>().unwrap(), [7]);
    assert!(seg
        .tensor("1.running_var")
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .all(|&v| v > 0.5));
    assert_eq!(set.get("emb").unwrap().spec().task.as_ref().unwrap().loss_name(), "bce");
    let again = HeadSet::from_bytes(&set.to_bytes().unwrap()).unwrap();
    assert_eq!(again, set);
    let bits = |s: &HeadSet| -> Vec<u32> {
        let all = s.heads.iter().flat_map(|h| h.tensors().iter().map(|(_, t)| t.to_f32()));
        all.flat_map(|t| {
            t.as_slice::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        })
        .collect()
    };
    assert!(bits(&again) == bits(&set), "weights changed in a save and reload");
}

#[test]
fn a_stray_or_missing_tensor_in_a_pytorch_file_is_named() {
    let bytes = std::fs::read(fixture("train/python_heads.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    // Renaming a tensor leaves it without a layer and its layer without it.
    let renamed = header.replacen("\"cls.0.bias\"", "\"cls.9.bias\"", 1);
    assert_ne!(renamed, header);
    let mut file = bytes[..8].to_vec();
    file.extend_from_slice(renamed.as_bytes());
    file.extend_from_slice(&bytes[8 + header_len..]);
    let e = HeadSet::from_bytes(&file).unwrap_err().to_string();
    assert!(e.contains("cls.0.bias") && e.contains("missing"), "{e}");
}

/// The `hydrant.heads` string of the worked example in docs/FORMAT.md.
fn documented_heads_json() -> String {
    let doc = std::fs::read_to_string(fixture("../../docs/FORMAT.md")).unwrap();
    let line = doc
        .lines()
        .find(|l| l.trim_start().starts_with("\"hydrant.heads\": \"[{"))
        .expect("the worked example's hydrant.heads line");
    let value = line.trim().trim_start_matches("\"hydrant.heads\": ").trim_end_matches(',');
    serde_json::from_str::<String>(value).unwrap()
}

#[test]
fn the_documented_example_is_what_hydrant_writes() {
    let set = HeadSet::load(fixture("train/parity_mlp_init.safetensors")).unwrap();
    let bytes = set.to_bytes().unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let meta = &header["__metadata__"];
    assert_eq!(meta["hydrant.format"], "1");
    assert_eq!(meta["hydrant.heads"].as_str().unwrap(), documented_heads_json());
    for (name, shape) in
        [("mlp.0.weight", [32, 64].as_slice()), ("mlp.0.bias", &[32]), ("mlp.2.weight", &[10, 32])]
    {
        assert_eq!(header[name]["dtype"], "F32", "{name}");
        assert_eq!(header[name]["shape"], serde_json::json!(shape), "{name}");
    }
}
