//! Matrices stored in a ggml type (F32/F16/BF16 and every block-quantized type), read in place
//! from a memory-mapped GGUF or safetensors file.

use std::sync::OnceLock;

use quant::bytes::SharedBytes;
use quant::ggml::{dequantize_row, GgmlType};

use crate::cpu::interleave::{Interleaved, ROWS};
use crate::cpu::q8::{ActFormat, QuantizedRows};
use crate::cpu::vec_dot::{ActRows, DotKernel, GroupKernel, GroupOut, GROUP_NT, MAX_NT};
use crate::cpu::Isa;
use crate::matrix::{check_matmul_args, Matrix, OutPtr};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MatrixError {
    #[error("{ty} matrix [{rows} x {cols}] needs {want} bytes, got {got}")]
    Size {
        ty: GgmlType,
        rows: usize,
        cols: usize,
        want: usize,
        got: usize,
    },
    #[error("{ty} cannot hold rows of {cols} elements (block size {block})")]
    RowLength {
        ty: GgmlType,
        cols: usize,
        block: usize,
    },
    #[error("{ty} is an activation-only type, not a weight type")]
    NotAWeightType { ty: GgmlType },
}

pub struct GgmlMatrix {
    ty: GgmlType,
    data: SharedBytes,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    kernel: DotKernel,
    /// Where the CPU has a kernel over interleaved rows for this type: it, and the weights
    /// rearranged for it on the first product (so matrices only ever used for lookups, such as
    /// untied embeddings, keep just their stored bytes).
    group: Option<(GroupKernel, OnceLock<Interleaved>)>,
}

impl GgmlMatrix {
    pub fn new(
        ty: GgmlType,
        data: SharedBytes,
        rows: usize,
        cols: usize,
    ) -> Result<GgmlMatrix, MatrixError> {
        let kernel = DotKernel::best(ty).ok_or(MatrixError::NotAWeightType { ty })?;
        let row_bytes = ty.row_bytes(cols).ok_or(MatrixError::RowLength {
            ty,
            cols,
            block: ty.block_size(),
        })?;
        if data.len() != rows * row_bytes {
            return Err(MatrixError::Size {
                ty,
                rows,
                cols,
                want: rows * row_bytes,
                got: data.len(),
            });
        }
        Ok(GgmlMatrix {
            ty,
            data,
            rows,
            cols,
            row_bytes,
            kernel,
            group: group_kernel(kernel),
        })
    }

    /// The same matrix multiplied with the kernels of level `isa` (tests and benchmarks compare
    /// levels), or None when this CPU cannot run them.
    pub fn with_isa(self, isa: Isa) -> Option<GgmlMatrix> {
        let kernel = DotKernel::new(self.ty, isa)?;
        Some(GgmlMatrix {
            kernel,
            group: group_kernel(kernel),
            ..self
        })
    }

    /// The interleaved form of the weights, made on first use, where a group kernel reads them.
    fn interleaved(&self) -> Option<&Interleaved> {
        let (_, packed) = self.group.as_ref()?;
        Some(packed.get_or_init(|| {
            let packed = Interleaved::new(self.ty, &self.data, self.rows, self.cols)
                .expect("a group kernel exists only for interleaved types");
            page_out(&self.data);
            packed
        }))
    }

    /// The kernel over interleaved rows that `matmul` uses, if any.
    pub fn group_kernel(&self) -> Option<GroupKernel> {
        self.group.as_ref().map(|(k, _)| *k)
    }

    /// The dot-product kernel `matmul` uses.
    pub fn kernel(&self) -> DotKernel {
        self.kernel
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// The stored bytes of row `r`.
    pub fn row_bytes_of(&self, r: usize) -> &[u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    pub fn data(&self) -> &SharedBytes {
        &self.data
    }
}

impl GgmlMatrix {
    /// The product over interleaved groups of sixteen rows: tasks of whole groups × token
    /// blocks, each group's weights reused from L1 for every token of the task.
    fn matmul_interleaved(
        &self,
        kernel: GroupKernel,
        packed: &Interleaved,
        acts: &[u8],
        stride: usize,
        n_tok: usize,
        y: &mut [f32],
    ) {
        let plan = Tiles::new(packed.groups(), n_tok, packed.group_bytes());
        let out = OutPtr(y.as_mut_ptr());
        let nb = packed.blocks();
        let rows = self.rows;
        let run = |task: usize| {
            let (groups, toks) = plan.task(task);
            for g in groups {
                let w = packed.group(g);
                let valid = ROWS.min(rows - g * ROWS);
                for t in toks.clone().step_by(GROUP_NT) {
                    let nt = GROUP_NT.min(toks.end - t);
                    // SAFETY: w is a whole group of this type with nb blocks per row; acts holds
                    // tokens t..t+nt in the kernel's format, `stride` bytes apart; the outputs
                    // (t+j)·rows + 16g + r for r < valid are inside y and written by this task
                    // only (tasks own disjoint groups × tokens).
                    unsafe {
                        kernel.tile_unchecked(
                            w,
                            nb,
                            ActRows {
                                x: &acts[t * stride..],
                                stride,
                                nt,
                            },
                            GroupOut {
                                y: out.at(t * rows + g * ROWS),
                                stride: rows,
                                rows: valid,
                            },
                        )
                    };
                }
            }
        };
        if plan.n_tasks() == 1 {
            run(0);
        } else {
            crate::parallel::for_each(plan.n_tasks(), run);
        }
    }
}

/// Once rearranged, the stored bytes are read again only for row lookups (a tied embedding) and
/// exports: asks the kernel to reclaim their resident pages, so the process does not hold the
/// weights twice. Paging out never loses data: pages of a mapped file are read again from it
/// when touched, and anonymous memory stays (or goes to swap).
fn page_out(bytes: &[u8]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = (bytes.as_ptr() as usize).next_multiple_of(PAGE);
        let end = (bytes.as_ptr() as usize + bytes.len()) / PAGE * PAGE;
        if end > start {
            // SAFETY: an advice on whole pages inside `bytes`; MADV_PAGEOUT keeps the contents.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// The group kernel and (still empty) interleaved form for matrices multiplied with `kernel`.
fn group_kernel(kernel: DotKernel) -> Option<(GroupKernel, OnceLock<Interleaved>)> {
    if kernel.act_format() == ActFormat::F32 {
        return None;
    }
    GroupKernel::new(kernel.weight_type(), kernel.isa()).map(|k| (k, OnceLock::new()))
}

impl Matrix for GgmlMatrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn matmul(&self, x: &[f32], n_tok: usize, y: &mut [f32]) {
        check_matmul_args(self, x, n_tok, y);
        let kernel = self.kernel;
        // Quantize the activations once; every weight row then reads them as 8-bit blocks.
        let quantized;
        let (acts, stride) = match kernel.act_format() {
            ActFormat::F32 => (bytemuck::cast_slice::<f32, u8>(x), 4 * self.cols),
            format => {
                quantized = QuantizedRows::new(kernel.isa(), format, x, self.cols);
                (quantized.bytes(), quantized.row_bytes())
            }
        };
        if let Some((kernel, _)) = &self.group {
            let packed = self.interleaved().expect("the group kernel's layout");
            return self.matmul_interleaved(*kernel, packed, acts, stride, n_tok, y);
        }
        let plan = Tiles::new(self.rows, n_tok, self.row_bytes);
        let out = OutPtr(y.as_mut_ptr());
        // One look through the shared buffer, not one per row.
        let weights: &[u8] = &self.data;
        let row_bytes = self.row_bytes;
        let run = |task: usize| {
            let (rows, toks) = plan.task(task);
            for t in toks.clone().step_by(MAX_NT) {
                let nt = MAX_NT.min(toks.end - t);
                let x = &acts[t * stride..];
                for r in rows.clone() {
                    // SAFETY: the row is whole blocks of the kernel's type (checked at
                    // construction), nt ≤ MAX_NT, and x holds tokens t..t+nt of the activations
                    // in the kernel's format.
                    let v = unsafe {
                        kernel.dot_tile_unchecked(
                            &weights[r * row_bytes..][..row_bytes],
                            x,
                            stride,
                            nt,
                        )
                    };
                    for (j, v) in v.iter().take(nt).enumerate() {
                        // SAFETY: (t+j)·rows + r < n_tok·rows = y.len(); tasks own disjoint
                        // (row, token) ranges.
                        unsafe { out.write((t + j) * self.rows + r, *v) };
                    }
                }
            }
        };
        if plan.n_tasks() == 1 {
            run(0);
        } else {
            crate::parallel::for_each(plan.n_tasks(), run);
        }
    }

    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize_row(self.ty, self.row_bytes_of(r), out)
            .expect("row geometry was checked at construction");
    }

    fn format(&self) -> String {
        self.ty.name().to_owned()
    }

    fn storage_bytes(&self) -> usize {
        self.data.len()
    }

    fn prepare(&self) {
        self.interleaved();
    }
}

/// How a matmul splits into tasks: blocks of weight rows small enough to stay in the L1/L2
/// cache while a block of tokens streams past them, four tokens per kernel call.
struct Tiles {
    rows: usize,
    n_tok: usize,
    rows_per_task: usize,
    toks_per_task: usize,
}

impl Tiles {
    /// Weight bytes per task: about half of a 32-48 KiB L1 data cache.
    const TASK_WEIGHT_BYTES: usize = 16 << 10;
    const TOKS_PER_TASK: usize = 64;
    /// Below this much weight traffic (bytes × tokens), a few microseconds of one thread's
    /// work, handing half of it to the team gains too little to pay for the hand-off.
    const SERIAL_WORK: usize = 64 << 10;

    fn new(rows: usize, n_tok: usize, row_bytes: usize) -> Tiles {
        if rows * row_bytes * n_tok <= Self::SERIAL_WORK {
            return Tiles {
                rows,
                n_tok,
                rows_per_task: rows.max(1),
                toks_per_task: n_tok.max(1),
            };
        }
        let cache_rows = (Self::TASK_WEIGHT_BYTES / row_bytes.max(1)).max(1);
        // With a single token block nothing is re-read, so tasks only need to be many enough to
        // balance the threads; fewer, larger ones cost less scheduling.
        let rows_per_task = if n_tok <= MAX_NT {
            cache_rows.max(rows.div_ceil(8 * crate::parallel::threads()))
        } else {
            cache_rows
        };
        Tiles {
            rows,
            n_tok,
            rows_per_task: rows_per_task.min(rows),
            toks_per_task: n_tok.min(Self::TOKS_PER_TASK),
        }
    }

    fn row_blocks(&self) -> usize {
        self.rows.div_ceil(self.rows_per_task)
    }

    fn n_tasks(&self) -> usize {
        self.row_blocks() * self.n_tok.div_ceil(self.toks_per_task)
    }

    /// The rows and tokens of task `i`; consecutive tasks share a token block so that its
    /// activations are reused across row blocks.
    fn task(&self, i: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let (tb, rb) = (i / self.row_blocks(), i % self.row_blocks());
        let r0 = rb * self.rows_per_task;
        let t0 = tb * self.toks_per_task;
        (
            r0..(r0 + self.rows_per_task).min(self.rows),
            t0..(t0 + self.toks_per_task).min(self.n_tok),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_matmul_matches_float64() {
        let (rows, cols, n_tok) = (5, 40, 3);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 4.0)
            .collect();
        let x: Vec<f32> = (0..n_tok * cols)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let m = GgmlMatrix::new(GgmlType::F32, SharedBytes::from_vec(bytes), rows, cols).unwrap();
        let mut y = vec![0f32; n_tok * rows];
        m.matmul(&x, n_tok, &mut y);
        for t in 0..n_tok {
            for r in 0..rows {
                let want: f64 = (0..cols)
                    .map(|c| w[r * cols + c] as f64 * x[t * cols + c] as f64)
                    .sum();
                assert!((y[t * rows + r] as f64 - want).abs() < 1e-4, "t={t} r={r}");
            }
        }
    }

    #[test]
    fn tiles_cover_every_row_and_token_once() {
        for (rows, n_tok, row_bytes) in [
            (1, 1, 18),
            (37, 17, 54),
            (576, 1, 324),
            (576, 512, 324),
            (49152, 1, 324),
            (1000, 70, 144),
            (3, 200, 100_000),
        ] {
            let plan = Tiles::new(rows, n_tok, row_bytes);
            let mut seen = vec![0u8; rows * n_tok];
            for i in 0..plan.n_tasks() {
                let (rs, ts) = plan.task(i);
                for t in ts {
                    for r in rs.clone() {
                        seen[t * rows + r] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|c| *c == 1), "{rows}x{n_tok}");
        }
    }

    #[test]
    fn rejects_bad_geometry() {
        let e = GgmlMatrix::new(GgmlType::Q4_0, SharedBytes::from_vec(vec![0; 18]), 1, 33);
        assert!(matches!(e, Err(MatrixError::RowLength { .. })));
        let e = GgmlMatrix::new(GgmlType::Q4_0, SharedBytes::from_vec(vec![0; 17]), 1, 32);
        assert!(matches!(e, Err(MatrixError::Size { .. })));
    }
}
