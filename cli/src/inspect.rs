//! `hydrant inspect`: what the split found.

use crate::{human, ModelArgs};
use hydrant::{Dim, Model};
use serde_json::{json, Value};

/// Arguments of `hydrant inspect`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Print exactly one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> hydrant::Result<()> {
    let model = args.model.load()?;
    let report = report(&model);
    if args.json {
        println!("{report}");
    } else {
        print!("{}", text(&report));
    }
    Ok(())
}

/// The inspect report as JSON (`inputs`, `trunk`, `heads`, `device`, `precision`, and `parts`:
/// where each trunk part and head runs).
pub fn report(model: &Model) -> Value {
    let summary = model.summary();
    let split = model.split();
    let inputs: Vec<Value> = model
        .inputs()
        .iter()
        .map(|i| {
            let shape: Vec<Value> = i
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => json!(n),
                    Dim::Symbolic(s) => json!(s),
                })
                .collect();
            json!({"name": i.name, "dtype": i.dtype.name(), "shape": shape})
        })
        .collect();
    let segments: Vec<Value> = split
        .trunk
        .iter()
        .map(|s| {
            let heads: Vec<&str> = s.heads.iter().map(|&h| split.heads[h].name.as_str()).collect();
            json!({"heads": heads, "nodes": s.nodes.len()})
        })
        .collect();
    let trainability = model.trainability();
    let heads: Vec<Value> = split
        .heads
        .iter()
        .zip(&summary.heads)
        .map(|(h, s)| {
            let why = trainability.iter().find(|(n, _)| *n == h.name).map(|(_, r)| match r {
                Ok(_) => Value::Null,
                Err(e) => json!(e.to_string()),
            });
            let why = why.unwrap_or_else(|| json!("unknown head"));
            json!({
                "trainable": why.is_null(),
                "not_trainable_because": why,
                "name": h.name,
                "outputs": h.outputs,
                "inputs": h.cut_points,
                "params": s.params,
                "flops": s.flops,
                "nodes": s.nodes,
            })
        })
        .collect();
    json!({
        "inputs": inputs,
        "trunk": {
            "cut_points": split.cut_points,
            "params": summary.trunk.params,
            "flops": summary.trunk.flops,
            "nodes": summary.trunk.nodes,
            "segments": segments,
        },
        "heads": heads,
        "device": format!("{} ({})", model.device(), model.device_reason()),
        "precision": model.precision().to_string(),
        "parts": model
            .part_devices()
            .into_iter()
            .map(|(part, runs_on)| json!({"part": part, "runs_on": runs_on}))
            .collect::<Vec<Value>>(),
        "threads": model.threads(),
    })
}

/// The report as aligned text.
pub fn text(r: &Value) -> String {
    let flops = |v: &Value| v.as_u64().map_or("?".into(), |f| format!("{}FLOP", human(f as f64)));
    let params = |v: &Value| format!("{}params", human(v.as_u64().unwrap_or(0) as f64));
    let mut out = String::from("inputs:\n");
    for i in r["inputs"].as_array().into_iter().flatten() {
        let shape: Vec<String> = i["shape"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| d.as_str().map_or(d.to_string(), str::to_string))
            .collect();
        out += &format!(
            "  {}  {} [{}]\n",
            i["name"].as_str().unwrap_or(""),
            i["dtype"].as_str().unwrap_or(""),
            shape.join(", ")
        );
    }
    let t = &r["trunk"];
    out += &format!(
        "trunk: {} node(s), {}, {} at batch 1\n",
        t["nodes"],
        params(&t["params"]),
        flops(&t["flops"])
    );
    for s in t["segments"].as_array().into_iter().flatten() {
        let heads: Vec<&str> =
            s["heads"].as_array().into_iter().flatten().filter_map(|h| h.as_str()).collect();
        out += &format!("  segment for {}: {} node(s)\n", heads.join(", "), s["nodes"]);
    }
    out += "  cut points:\n";
    for c in t["cut_points"].as_array().into_iter().flatten() {
        out += &format!("    {}\n", c.as_str().unwrap_or(""));
    }
    out += "heads:\n";
    for h in r["heads"].as_array().into_iter().flatten() {
        let list = |k: &str| -> String {
            let v: Vec<&str> =
                h[k].as_array().into_iter().flatten().filter_map(|x| x.as_str()).collect();
            v.join(", ")
        };
        out += &format!(
            "  {}: {} node(s), {}, {}\n    outputs: {}\n    reads:   {}\n    trainable: {}\n",
            h["name"].as_str().unwrap_or(""),
            h["nodes"],
            params(&h["params"]),
            flops(&h["flops"]),
            list("outputs"),
            list("inputs"),
            match h["not_trainable_because"].as_str() {
                Some(why) => format!("no ({why})"),
                None => "yes".into(),
            },
        );
    }
    out += &format!("device: {}, {} thread(s)\n", r["device"].as_str().unwrap_or(""), r["threads"]);
    out += "runs on:\n";
    for p in r["parts"].as_array().into_iter().flatten() {
        out += &format!(
            "  {}: {}\n",
            p["part"].as_str().unwrap_or(""),
            p["runs_on"].as_str().unwrap_or("")
        );
    }
    out
}
