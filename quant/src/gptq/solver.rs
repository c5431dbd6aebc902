//! The GPTQ solver: columns in blocks of `block_size`, each column quantized and its error
//! spread over the rest of its block at once, the block's accumulated error applied to the
//! later columns in one product (the "lazy batch" update). Output rows are independent given
//! U, so tiles of rows run in parallel.

use rayon::prelude::*;

use super::vector::{sub_products, sub_scaled, Products};
use super::{Factor, GptqConfig, GptqError, GptqResult};
use crate::groupq::{dequantize_value, fit, quantize_value, GroupParams, GroupQuant, Real};

/// Rows per parallel task: enough to amortize reading U, few enough to balance two threads on
/// the smallest linears.
const TILE_ROWS: usize = 16;

/// GPTQ-quantizes the [rows × cols] weight `w` (row-major, nn.Linear layout) with the factored
/// Hessian of its input, computing in `T` (f32 in the converters; f64 to compare with a
/// float64 oracle).
pub fn quantize<T: Real>(
    w: &[f32],
    rows: usize,
    cols: usize,
    f: &Factor,
    cfg: &GptqConfig,
) -> Result<GptqResult, GptqError> {
    if w.len() != rows * cols || f.n != cols {
        return Err(GptqError::Shape(format!(
            "weight of {} values for [{rows} x {cols}], Hessian of {} features",
            w.len(),
            f.n
        )));
    }
    let g = cfg.group_size;
    if g == 0 || !cols.is_multiple_of(g) {
        return Err(GptqError::GroupSize { group: g, cols });
    }
    let ng = cols / g;
    let u: Vec<T> = f.u.iter().map(|v| T::from_f64(*v)).collect();

    // Static groups: parameters from the original weights, by original column group.
    let static_params: Option<Vec<GroupParams>> = cfg.static_groups.then(|| {
        let mut p = Vec::with_capacity(ng * rows);
        for gi in 0..ng {
            for r in 0..rows {
                let span: Vec<f32> = (gi * g..(gi + 1) * g)
                    .map(|c| if f.dead[c] { 0.0 } else { w[r * cols + c] })
                    .collect();
                p.push(fit(&span, cfg.bits, cfg.fit_rule()));
            }
        }
        p
    });

    struct Tile {
        codes: Vec<u8>,
        params: Vec<GroupParams>,
        loss: f64,
    }
    let tiles: Vec<Tile> = (0..rows.div_ceil(TILE_ROWS))
        .into_par_iter()
        .map(|t| {
            let r0 = t * TILE_ROWS;
            let nr = TILE_ROWS.min(rows - r0);
            let mut tw: Vec<T> = Vec::with_capacity(nr * cols);
            for r in r0..r0 + nr {
                tw.extend(
                    f.perm
                        .iter()
                        .map(|&c| T::from_f32(if f.dead[c] { 0.0 } else { w[r * cols + c] })),
                );
            }
            let mut tile = Tile {
                codes: vec![0; nr * cols],
                // Dynamic groups: one entry per (row, permuted group).
                params: Vec::new(),
                loss: 0.0,
            };
            solve_tile(
                &mut tw,
                nr,
                cols,
                &u,
                cfg,
                static_params
                    .as_ref()
                    .map(|p| move |r: usize, i: usize| p[(f.perm[i] / g) * rows + r0 + r]),
                &mut tile.codes,
                &mut tile.params,
                &mut tile.loss,
            );
            tile
        })
        .collect();

    // Back to the original column order; g_idx only where groups are not contiguous.
    let mut quant = GroupQuant {
        rows,
        cols,
        bits: cfg.bits,
        group_size: g,
        codes: vec![0; rows * cols],
        scales: vec![0.0; ng * rows],
        zeros: vec![0; ng * rows],
        g_idx: None,
    };
    let mut loss = 0.0;
    for (t, tile) in tiles.iter().enumerate() {
        let r0 = t * TILE_ROWS;
        let nr = tile.codes.len() / cols;
        for r in 0..nr {
            for (i, &c) in f.perm.iter().enumerate() {
                quant.codes[(r0 + r) * cols + c] = tile.codes[r * cols + i];
            }
            if static_params.is_none() {
                for gi in 0..ng {
                    let p = tile.params[r * ng + gi];
                    quant.scales[gi * rows + r0 + r] = p.scale;
                    quant.zeros[gi * rows + r0 + r] = p.zero;
                }
            }
        }
        loss += tile.loss;
    }
    if let Some(p) = &static_params {
        for (i, p) in p.iter().enumerate() {
            quant.scales[i] = p.scale;
            quant.zeros[i] = p.zero;
        }
    } else if cfg.act_order {
        let mut g_idx = vec![0u32; cols];
        for (i, &c) in f.perm.iter().enumerate() {
            g_idx[c] = (i / g) as u32;
        }
        quant.g_idx = Some(g_idx);
    }
    Ok(GptqResult { quant, loss })
}

/// Solves one tile of `nr` rows of the permuted weight `w` (nr × n) in place. `static_params`
/// gives the fixed parameters of (row, permuted column) when groups are static; otherwise
/// groups are fitted as the solve reaches them and written to `params` (row-major, nr × groups).
#[allow(clippy::too_many_arguments)]
fn solve_tile<T: Real>(
    w: &mut [T],
    nr: usize,
    n: usize,
    u: &[T],
    cfg: &GptqConfig,
    static_params: Option<impl Fn(usize, usize) -> GroupParams>,
    codes: &mut [u8],
    params: &mut Vec<GroupParams>,
    loss: &mut f64,
) {
    let (g, bs) = (cfg.group_size, cfg.block_size.max(1));
    let ng = n / g;
    let maxq = (1u32 << cfg.bits) - 1;
    let mut dynamic = vec![
        GroupParams {
            scale: 1.0,
            zero: 0
        };
        nr * ng
    ];
    let mut current = vec![
        GroupParams {
            scale: 1.0,
            zero: 0
        };
        nr
    ];
    let mut err = vec![T::from_f64(0.0); nr * bs];
    for i1 in (0..n).step_by(bs) {
        let i2 = (i1 + bs).min(n);
        for i in i1..i2 {
            let d = u[i * n + i];
            let urow = &u[i * n + i..i * n + i2];
            for r in 0..nr {
                let row = &mut w[r * n..(r + 1) * n];
                let p = match &static_params {
                    Some(sp) => sp(r, i),
                    None => {
                        if i.is_multiple_of(g) {
                            // The group's weights as the solve has updated them so far (columns
                            // of later blocks still lack this block's lazy update, as in
                            // gptq.py, which fits at block starts).
                            current[r] = fit(&row[i..i + g], cfg.bits, cfg.fit_rule());
                            dynamic[r * ng + i / g] = current[r];
                        }
                        current[r]
                    }
                };
                let x = row[i];
                let q = quantize_value(x, p, maxq);
                codes[r * n + i] = q;
                let e = (x - dequantize_value::<T>(q, p)) / d;
                *loss += 0.5 * (e * e).to_f64();
                err[r * bs + (i - i1)] = e;
                sub_scaled(&mut row[i..i2], e, urow);
            }
        }
        // Lazy batch update of the later columns: W[:, i2:] −= Err · U[i1:i2, i2:].
        if i2 < n {
            let p = Products {
                a: &err,
                a_stride: bs,
                xs: &u[i1 * n + i2..],
                x_stride: n,
                nk: i2 - i1,
            };
            sub_products(&mut w[i2..], n, nr, n - i2, &p);
        }
    }
    if static_params.is_none() {
        *params = dynamic;
    }
}
