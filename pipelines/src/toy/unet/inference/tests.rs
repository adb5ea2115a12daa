//! The CPU forward against the network's tensor-op forward, and its thread independence.

use super::*;
use crate::test_support::{max_abs, max_abs_diff};
use crate::toy::model::{Assets, ToyFlow, FLOW};
use crate::toy::FlowNet;
use candle_core::Device;
use candle_nn::{VarBuilder, VarMap};

fn inputs(b: usize) -> (Tensor, Vec<u32>) {
    let x = Tensor::randn(0f32, 1.0, (b, 3, 32, 32), &Device::Cpu).unwrap();
    (x, (0..b as u32).map(|i| (i * 7) % 11).collect())
}

/// The network's forward (candle's ops) on the same inputs, timestep `t`.
fn reference(net: &Unet, x: &Tensor, t: f32, labels: &[u32]) -> Tensor {
    let b = labels.len();
    let t = Tensor::full(t, b, &Device::Cpu).unwrap();
    let y = Tensor::new(labels, &Device::Cpu).unwrap();
    net.forward(x, &t, &y).unwrap()
}

#[test]
fn equals_the_networks_forward_with_every_weight_random() {
    // Two levels at other widths, every weight random (not the zero initialisation), so
    // each path (skips, modulation, attention, output) carries signal.
    let mut c = UnetConfig::toy();
    c.channels = vec![8, 24];
    c.num_heads = 3;
    c.embed_size = 16;
    c.frequency_size = 16;
    let vm = VarMap::new();
    let mut net = Unet::new(&c, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    super::super::super::nn::init_seeded(&vm, 9, |_| false).unwrap();
    net.set_fused_ops(true);
    let fast = UnetInference::new(&net).unwrap();
    let (x, labels) = inputs(3);
    let want = reference(&net, &x, 420.0, &labels);
    let got = fast.forward(&x, 420.0, &labels).unwrap();
    let scale = max_abs(&want);
    let d = max_abs_diff(&got, &want);
    assert!(
        scale > 0.1 && d < 1e-5 * scale.max(1.0),
        "differs by {d} (scale {scale})"
    );
}

#[test]
fn equals_the_shipped_models_forward_and_its_bits_do_not_depend_on_the_threads() {
    let flow = ToyFlow::load(&Assets::Embedded, FLOW, "toy").unwrap();
    let FlowNet::Unet(net) = flow.network() else {
        panic!("the shipped flow model is a U-Net")
    };
    let fast = UnetInference::new(net).unwrap();
    let (x, labels) = inputs(2);
    for t in [980.0, 500.0, 20.0] {
        let want = reference(net, &x, t, &labels);
        let got = fast.forward(&x, t, &labels).unwrap();
        let d = max_abs_diff(&got, &want);
        assert!(d < 1e-4, "t = {t}: differs by {d}");
    }
    // One image, its products on one thread and split over four: the same bits.
    let image = x
        .get(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let run = |par| {
        let mut out = vec![0f32; image.len()];
        fast.forward_image(&image, 500.0, 3, &mut out, &mut Workspace::default(), par);
        out
    };
    let one = run(Parallelism::None);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    let four = pool.install(|| run(Parallelism::Rayon(4)));
    assert!(one
        .iter()
        .zip(&four)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}
