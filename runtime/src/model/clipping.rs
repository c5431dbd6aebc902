//! Which linears' calibrated (static) activation scales the run-time activations exceeded: the
//! values are saturated there, as vLLM saturates them, and reported here by layer, never hidden.

use super::weights::{LinearKind, Model};

/// One linear whose static activation scale saturated values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClippedLinear {
    pub layer: usize,
    pub kind: LinearKind,
    pub clipped: u64,
    pub seen: u64,
}

impl Model {
    /// The linears whose static activation scales saturated values so far, in layer order.
    pub fn clipped_activations(&self) -> Vec<ClippedLinear> {
        let mut out = Vec::new();
        for (layer, l) in self.layers.iter().enumerate() {
            for kind in LinearKind::ALL {
                if let Some(c) = l.linear(kind).w.clipped_activations() {
                    if c.clipped > 0 {
                        out.push(ClippedLinear {
                            layer,
                            kind,
                            clipped: c.clipped,
                            seen: c.seen,
                        });
                    }
                }
            }
        }
        out
    }

    /// A warning naming each linear whose static activation scale saturated values, or None.
    pub fn clipping_report(&self) -> Option<String> {
        let c = self.clipped_activations();
        if c.is_empty() {
            return None;
        }
        let mut s = format!(
            "activations beyond the calibrated static scale were saturated in {} linears:\n",
            c.len()
        );
        for l in &c {
            s += &format!(
                "  layer {} {}: {} of {} values ({:.4}%)\n",
                l.layer,
                l.kind.hf_name(),
                l.clipped,
                l.seen,
                100.0 * l.clipped as f64 / l.seen.max(1) as f64
            );
        }
        Some(s)
    }
}
