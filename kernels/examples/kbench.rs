use kernels::cpu::q8::QuantizedRows;
use kernels::cpu::vec_dot::DotKernel;
use kernels::cpu::Isa;
use quant::ggml::GgmlType;
use std::time::Instant;
fn main() {
    for name in std::env::args().skip(1).collect::<Vec<_>>() {
        let name = name.as_str();
        let ty = GgmlType::from_name(name).unwrap();
        let cols = if ty.block_size() == 256 { 768 } else { 576 };
        let rows = 16;
        let w: Vec<u8> = (0..rows * ty.row_bytes(cols).unwrap())
            .map(|i| (i * 7919 % 251) as u8 & 0x3f)
            .collect();
        let x: Vec<f32> = (0..4 * cols)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 8.0)
            .collect();
        for isa in Isa::available() {
            let k = DotKernel::new(ty, isa).unwrap();
            let acts = QuantizedRows::new(isa, k.act_format(), &x, cols);
            let rb = ty.row_bytes(cols).unwrap();
            for nt in [1, 4] {
                let mut best = f64::INFINITY;
                let mut s = 0f32;
                for _ in 0..50 {
                    let t = Instant::now();
                    for _ in 0..20 {
                        for r in 0..rows {
                            s += k.dot_tile(
                                &w[r * rb..(r + 1) * rb],
                                acts.bytes(),
                                acts.row_bytes(),
                                nt,
                            )[0];
                        }
                    }
                    best = best.min(t.elapsed().as_secs_f64());
                }
                let flops = 2.0 * (20 * rows * cols * nt) as f64;
                println!(
                    "{name} {isa:?} nt={nt}: {:.1} GFLOP/s ({s})",
                    flops / best / 1e9
                );
            }
        }
    }
}
