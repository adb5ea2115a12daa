//! Plugin child processes are reaped: after a timeout kill and after the reward is dropped, the
//! test process has no children left (zombies included: `/proc/self/task/*/children` lists
//! them until they are waited for). Also: splitting a batch over concurrent children and small
//! requests gives the same scores as one child. One test, so no other test's children interfere.

use std::time::Duration;

use candle_core::{Device, Tensor};
use steerdiff_guidance::{Condition, Reward, RewardContext, StepPoint};
use steerdiff_pipelines::reward::{PluginOptions, PluginReward, PluginTarget};

fn children() -> Vec<String> {
    let mut out = vec![];
    for task in std::fs::read_dir("/proc/self/task").expect("Linux /proc") {
        let path = task.unwrap().path().join("children");
        let text = std::fs::read_to_string(&path).expect("/proc/self/task/*/children");
        out.extend(text.split_whitespace().map(String::from));
    }
    out
}

fn plugin(args: &[&str]) -> PluginTarget {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/plugins/");
    let mut argv = vec!["python3".to_string(), format!("{dir}{}", args[0])];
    argv.extend(args[1..].iter().map(|a| a.to_string()));
    PluginTarget::Stdio(argv)
}

#[test]
fn children_are_reaped_and_concurrency_changes_no_score() {
    let x = Tensor::arange(0f32, 6.0 * 48.0, &Device::Cpu)
        .unwrap()
        .affine(1.0 / 288.0, -0.5)
        .unwrap()
        .reshape((6, 3, 4, 4))
        .unwrap();
    let conds = [Condition::Class(1); 6];
    let cx = RewardContext {
        conds: &conds,
        at: StepPoint::CLEAN,
    };
    let one =
        PluginReward::connect(&plugin(&["brightness_stdio.py"]), PluginOptions::default()).unwrap();
    let base = one.score(&x, &cx).unwrap();
    let rust = steerdiff_pipelines::reward::Brightness
        .score(&x, &cx)
        .unwrap();
    assert_eq!(
        base, rust,
        "the plugin's brightness is the Rust one, bit for bit"
    );
    let many = PluginReward::connect(
        &plugin(&["brightness_stdio.py"]),
        PluginOptions {
            concurrency: 3,
            batch_size: Some(1),
            ..PluginOptions::default()
        },
    )
    .unwrap();
    assert_eq!(children().len(), 4, "one + three children running");
    assert_eq!(many.score(&x, &cx).unwrap(), base);
    assert_eq!(many.take_cached(), 0);
    assert_eq!(many.score(&x, &cx).unwrap(), base);
    assert_eq!(
        many.take_cached(),
        6,
        "the second call is answered from the cache"
    );
    drop(one);
    drop(many);
    assert_eq!(children(), Vec::<String>::new(), "children left after drop");

    let hang = PluginReward::connect(
        &plugin(&["faulty.py", "hang"]),
        PluginOptions {
            timeout: Duration::from_millis(500),
            retries: 0,
            ..PluginOptions::default()
        },
    )
    .unwrap();
    let err = hang.score(&x, &cx).unwrap_err().to_string();
    assert!(err.contains("no answer within 0.5 s"), "{err}");
    assert_eq!(
        children(),
        Vec::<String>::new(),
        "a timed-out child is killed and reaped"
    );
    drop(hang);
}
