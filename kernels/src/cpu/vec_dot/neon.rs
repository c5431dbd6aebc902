//! aarch64 NEON kernels.

use super::TileFn;
use quant::ggml::GgmlType;

pub(super) fn kernel(_ty: GgmlType) -> Option<TileFn> {
    None
}
