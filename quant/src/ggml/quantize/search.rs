//! The scale searches behind ggml's quantizers (`make_qx_quants`, `make_q3_quants`,
//! `make_qkx2_quants`/`make_qkx3_quants`, `make_qp_quants`). Every sum is accumulated in f32 in
//! element order and every product is formed in the C code's association order: changing either
//! changes which candidate wins and so the output bytes.

use super::numeric::{abs_max, c_max, nearest_int, GROUP_MAX_EPS};

/// Lanes of the searches that score candidates (or sub-blocks) side by side: each lane runs its
/// own sums in element order, exactly as the scalar loop would, so vector units evaluate several
/// at once without changing a bit of any result.
const LANES: usize = 8;

/// Symmetric quantization to `l - nmax` with `l` in `[0, 2·nmax)`, weighted least squares scale,
/// trying 19 candidate inverse scales around `-nmax / max` (ggml's `make_qx_quants`, rmse_type 1).
/// Writes the offset levels into `levels` and returns the scale. The candidates' sums do not
/// depend on each other, so they run in lanes; the choice then walks them in ggml's order.
#[inline(always)]
pub fn make_qx_quants(nmax: i32, x: &[f32], w: &[f32], levels: &mut [i8]) -> f32 {
    let (amax, max) = abs_max(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    // -nmax / max first, then -(nmax + 0.1·is) / max for is = -9..=9 but 0
    const N_TRY: usize = 19;
    let mut iscales = [0f32; 3 * LANES];
    iscales[0] = -(nmax as f32) / max;
    for (slot, is) in iscales[1..N_TRY]
        .iter_mut()
        .zip((-9..=9).filter(|&is| is != 0))
    {
        *slot = -(nmax as f32 + 0.1 * is as f32) / max;
    }
    let mut sums = [(0f32, 0f32); 3 * LANES];
    for base in (0..N_TRY).step_by(LANES) {
        let mut iscale = [0f32; LANES];
        iscale.copy_from_slice(&iscales[base..base + LANES]);
        let (mut sumlx, mut suml2) = ([0f32; LANES], [0f32; LANES]);
        for (&xi, &wi) in x.iter().zip(w) {
            for k in 0..LANES {
                let l = level(iscale[k], xi) as f32;
                sumlx[k] += wi * xi * l;
                suml2[k] += wi * l * l;
            }
        }
        for k in 0..LANES {
            sums[base + k] = (sumlx[k], suml2[k]);
        }
    }

    let (sumlx, suml2) = sums[0];
    let mut chosen = 0;
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for (c, &(sumlx, suml2)) in sums.iter().enumerate().take(N_TRY).skip(1) {
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            chosen = c;
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    for (q, &xi) in levels.iter_mut().zip(x) {
        *q = (level(iscales[chosen], xi) + nmax) as i8;
    }
    scale
}

/// Symmetric `nmax`-level quantization weighted by x², refined by up to five passes of
/// per-element re-rounding (ggml's `make_q3_quants` with do_rmse). Used by Q3_K without an
/// importance matrix. Writes offset levels (`l + nmax`) and returns the scale.
#[inline(always)]
pub fn make_q3_quants(nmax: i32, x: &[f32], levels: &mut [i8]) -> f32 {
    let (amax, max) = abs_max(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (q, &xi) in levels.iter_mut().zip(x) {
        let l = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
        *q = l as i8;
        let w = xi * xi;
        sumlx += w * xi * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (q, &xi) in levels.iter_mut().zip(x) {
            let w = xi * xi;
            let old = *q as f32;
            let mut slx = sumlx - w * xi * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new_l = nearest_int(xi * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *q as i32 {
                    slx += w * xi * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *q = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for q in levels.iter_mut() {
        *q += nmax as i8;
    }
    sumlx / suml2
}

/// The candidate grid of an affine search: inverse scales `(rmin + rdelta·k + nmax) / (max - min)`
/// for k in 0..=nstep, scored by weighted absolute (`use_mad`) or squared error.
#[derive(Clone, Copy, Debug)]
pub struct AffineGrid {
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    pub use_mad: bool,
}

/// The grid of the reference Q2_K quantizer.
pub const GRID_Q2K: AffineGrid = AffineGrid {
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
    use_mad: true,
};
/// The grid of the reference Q4_K quantizer.
pub const GRID_Q4K: AffineGrid = AffineGrid {
    rmin: -1.0,
    rdelta: 0.1,
    nstep: 20,
    use_mad: false,
};
/// The grid of the reference Q5_K quantizer.
pub const GRID_Q5K: AffineGrid = AffineGrid {
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
    use_mad: false,
};
/// The finer grid every importance-matrix path uses (ggml's make_qkx3_quants call sites).
pub const GRID_IMATRIX: AffineGrid = AffineGrid {
    rmin: -0.9,
    rdelta: 0.05,
    nstep: 36,
    use_mad: false,
};

/// The result of an affine search: `x ≈ scale·l - min` with `min ≥ 0`.
#[derive(Clone, Copy, Debug)]
pub struct Affine {
    pub scale: f32,
    pub min: f32,
}

/// Affine quantization to levels `[0, nmax]` with the minimum clamped to ≤ 0: for every candidate
/// of `grid`, round, solve the weighted least-squares scale and offset in closed form, keep the
/// lowest weighted error (ggml's `make_qkx2_quants` / `make_qkx3_quants`, which differ only in
/// their callers' weights and grids). `x` holds at most 32 elements.
#[inline(always)]
pub fn make_qkx_quants(
    nmax: i32,
    x: &[f32],
    w: &[f32],
    levels: &mut [u8],
    grid: AffineGrid,
) -> Affine {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for (&xi, &wi) in x.iter().zip(w).skip(1) {
        if xi < min {
            min = xi;
        }
        if xi > max {
            max = xi;
        }
        sum_w += wi;
        sum_x += wi * xi;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        levels.fill(0);
        return Affine {
            scale: 0.0,
            min: -min,
        };
    }
    let error = |scale: f32, min: f32, ls: &[u8]| {
        let mut err = 0f32;
        for ((&l, &xi), &wi) in ls.iter().zip(x).zip(w) {
            let diff = scale * l as f32 + min - xi;
            err += wi
                * if grid.use_mad {
                    diff.abs()
                } else {
                    diff * diff
                };
        }
        err
    };

    let iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    for (q, &xi) in levels.iter_mut().zip(x) {
        *q = nearest_int(iscale * (xi - min)).clamp(0, nmax) as u8;
    }
    let mut best_err = error(scale, min, levels);
    if grid.nstep < 1 {
        return Affine { scale, min: -min };
    }

    let mut aux = [0u8; 32];
    let aux = &mut aux[..n];
    for is in 0..=grid.nstep {
        let iscale = (grid.rmin + grid.rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for ((q, &xi), &wi) in aux.iter_mut().zip(x).zip(w) {
            let l = nearest_int(iscale * (xi - min)).clamp(0, nmax);
            *q = l as u8;
            let l = l as f32;
            sum_l += wi * l;
            sum_l2 += wi * l * l;
            sum_xl += wi * l * xi;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let err = error(this_scale, this_min, aux);
            if err < best_err {
                levels.copy_from_slice(aux);
                best_err = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    Affine { scale, min: -min }
}

/// `make_qkx_quants` of eight sub-blocks at once: `x`, `w` and `levels` hold eight consecutive
/// sub-blocks of `x.len() / 8` (at most 32) elements. Each lane runs one sub-block's search with
/// its own running minimum and best error, step for step as the scalar search, so the results
/// are bit-identical; the data is transposed so that one vector operation serves all eight.
#[inline(always)]
pub fn make_qkx_quants_x8(
    nmax: i32,
    x: &[f32],
    w: &[f32],
    levels: &mut [u8],
    grid: AffineGrid,
) -> [Affine; LANES] {
    let n = x.len() / LANES;
    assert!(n > 0 && n <= 32 && x.len() == n * LANES && w.len() == x.len());
    let mut xt = [[0f32; LANES]; 32];
    let mut wt = [[0f32; LANES]; 32];
    for k in 0..LANES {
        for i in 0..n {
            xt[i][k] = x[k * n + i];
            wt[i][k] = w[k * n + i];
        }
    }
    let (xt, wt) = (&xt[..n], &wt[..n]);
    let (mut min, mut max) = (xt[0], xt[0]);
    let mut sum_w = wt[0];
    let mut sum_x = [0f32; LANES];
    for k in 0..LANES {
        sum_x[k] = sum_w[k] * xt[0][k];
    }
    for (xi, wi) in xt.iter().zip(wt).skip(1) {
        for k in 0..LANES {
            if xi[k] < min[k] {
                min[k] = xi[k];
            }
            if xi[k] > max[k] {
                max[k] = xi[k];
            }
            sum_w[k] += wi[k];
            sum_x[k] += wi[k] * xi[k];
        }
    }
    let mut flat = [false; LANES];
    for k in 0..LANES {
        if min[k] > 0.0 {
            min[k] = 0.0;
        }
        flat[k] = max[k] <= min[k];
    }
    let nmax_f = nmax as f32;
    #[inline(always)]
    fn level(iscale: f32, xi: f32, min: f32, nmax: i32) -> f32 {
        nearest_int(iscale * (xi - min)).clamp(0, nmax) as f32
    }
    #[inline(always)]
    fn error(
        scale: &[f32; LANES],
        min: &[f32; LANES],
        ls: &[[f32; LANES]],
        xt: &[[f32; LANES]],
        wt: &[[f32; LANES]],
        use_mad: bool,
    ) -> [f32; LANES] {
        let mut err = [0f32; LANES];
        for ((l, xi), wi) in ls.iter().zip(xt).zip(wt) {
            for k in 0..LANES {
                let diff = scale[k] * l[k] + min[k] - xi[k];
                err[k] += wi[k] * if use_mad { diff.abs() } else { diff * diff };
            }
        }
        err
    }

    let mut iscale = [0f32; LANES];
    let mut scale = [0f32; LANES];
    for k in 0..LANES {
        iscale[k] = nmax_f / (max[k] - min[k]);
        scale[k] = 1.0 / iscale[k];
    }
    let mut best = [[0f32; LANES]; 32];
    for (l, xi) in best.iter_mut().zip(xt) {
        for k in 0..LANES {
            l[k] = level(iscale[k], xi[k], min[k], nmax);
        }
    }
    let mut best_err = error(&scale, &min, &best[..n], xt, wt, grid.use_mad);

    let mut aux = [[0f32; LANES]; 32];
    let steps = if grid.nstep < 1 { 0 } else { grid.nstep + 1 };
    for is in 0..steps {
        let step = grid.rmin + grid.rdelta * is as f32 + nmax_f;
        let mut iscale = [0f32; LANES];
        for k in 0..LANES {
            iscale[k] = step / (max[k] - min[k]);
        }
        let (mut sum_l, mut sum_l2, mut sum_xl) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
        for ((l, xi), wi) in aux.iter_mut().zip(xt).zip(wt) {
            for k in 0..LANES {
                let lk = level(iscale[k], xi[k], min[k], nmax);
                l[k] = lk;
                sum_l[k] += wi[k] * lk;
                sum_l2[k] += wi[k] * lk * lk;
                sum_xl[k] += wi[k] * lk * xi[k];
            }
        }
        let mut this_scale = [0f32; LANES];
        let mut this_min = [0f32; LANES];
        let mut solved = [false; LANES];
        for k in 0..LANES {
            let det = sum_w[k] * sum_l2[k] - sum_l[k] * sum_l[k];
            solved[k] = det > 0.0;
            this_scale[k] = (sum_w[k] * sum_xl[k] - sum_x[k] * sum_l[k]) / det;
            this_min[k] = (sum_l2[k] * sum_x[k] - sum_l[k] * sum_xl[k]) / det;
            if this_min[k] > 0.0 {
                this_min[k] = 0.0;
                this_scale[k] = sum_xl[k] / sum_l2[k];
            }
        }
        let err = error(&this_scale, &this_min, &aux[..n], xt, wt, grid.use_mad);
        let mut better = [false; LANES];
        for k in 0..LANES {
            better[k] = !flat[k] && solved[k] && err[k] < best_err[k];
        }
        for (b, a) in best.iter_mut().zip(&aux).take(n) {
            for k in 0..LANES {
                if better[k] {
                    b[k] = a[k];
                }
            }
        }
        for k in 0..LANES {
            if better[k] {
                best_err[k] = err[k];
                scale[k] = this_scale[k];
                min[k] = this_min[k];
            }
        }
    }
    for k in 0..LANES {
        for i in 0..n {
            levels[k * n + i] = if flat[k] { 0 } else { best[i][k] as u8 };
        }
    }
    std::array::from_fn(|k| {
        if flat[k] {
            Affine {
                scale: 0.0,
                min: -min[k],
            }
        } else {
            Affine {
                scale: scale[k],
                min: -min[k],
            }
        }
    })
}

/// Quantizes non-negative values (sub-block scales or mins) to `[0, nmax]` levels of a common
/// scale, weighted by `w`: a 9-point grid search then up to five passes of per-element
/// re-rounding (ggml's `make_qp_quants`). Levels are stored as C would store them in a uint8_t,
/// wrapping for the negative inputs the search does not expect. Returns the scale.
#[inline(always)]
pub fn make_qp_quants(nmax: i32, x: &[f32], levels: &mut [u8], w: &[f32]) -> f32 {
    let max = x.iter().fold(0f32, |m, &v| c_max(m, v));
    if max == 0.0 {
        levels.fill(0);
        return 0.0;
    }
    let mse = |iscale: f32, clamp: bool| {
        let scale = 1.0 / iscale;
        let mut mse = 0f32;
        for (&xi, &wi) in x.iter().zip(w) {
            let mut l = nearest_int(iscale * xi);
            if clamp {
                l = l.min(nmax);
            } else {
                // the first candidate is scored with its levels as stored in uint8_t
                l = l as u8 as i32;
            }
            let diff = xi - scale * l as f32;
            mse += wi * diff * diff;
        }
        mse
    };

    let mut iscale = nmax as f32 / max;
    let mut best_mse = mse(iscale, false);
    for is in (-4..=4).filter(|&is| is != 0) {
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let m = mse(iscale_is, true);
        if m < best_mse {
            best_mse = m;
            iscale = iscale_is;
        }
    }

    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for ((q, &xi), &wi) in levels.iter_mut().zip(x).zip(w) {
        let l = nearest_int(iscale * xi).min(nmax);
        *q = l as u8;
        let l = l as f32;
        sumlx += wi * xi * l;
        suml2 += wi * l * l;
    }
    for _ in 0..5 {
        let mut changed = false;
        for ((q, &xi), &wi) in levels.iter_mut().zip(x).zip(w) {
            let old = *q as f32;
            let mut slx = sumlx - wi * xi * old;
            let mut sl2 = suml2 - wi * old * old;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(xi * sl2 / slx).min(nmax);
                if new_l != *q as i32 {
                    slx += wi * xi * new_l as f32;
                    sl2 += wi * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *q = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    sumlx / suml2
}
