//! Which SIMD extensions this CPU has, detected once at run time: builds are portable (no
//! target-cpu=native) and still use the widest units available.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vnni: bool,
    pub avxvnni: bool,
    pub neon: bool,
    pub dotprod: bool,
}

impl CpuFeatures {
    /// AVX2 with FMA: the baseline x86 SIMD path.
    pub fn has_avx2_fma(&self) -> bool {
        self.avx2 && self.fma
    }

    fn detect() -> CpuFeatures {
        // QUANTIZE_CPU=scalar forces the portable paths, so tests and benchmarks can compare them.
        if std::env::var("QUANTIZE_CPU").is_ok_and(|v| v == "scalar") {
            return CpuFeatures::default();
        }
        #[cfg(target_arch = "x86_64")]
        {
            CpuFeatures {
                avx2: is_x86_feature_detected!("avx2"),
                fma: is_x86_feature_detected!("fma"),
                f16c: is_x86_feature_detected!("f16c"),
                avx512f: is_x86_feature_detected!("avx512f"),
                avx512bw: is_x86_feature_detected!("avx512bw"),
                avx512vnni: is_x86_feature_detected!("avx512vnni"),
                avxvnni: is_x86_feature_detected!("avxvnni"),
                ..Default::default()
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            CpuFeatures {
                neon: std::arch::is_aarch64_feature_detected!("neon"),
                dotprod: std::arch::is_aarch64_feature_detected!("dotprod"),
                ..Default::default()
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            CpuFeatures::default()
        }
    }

    /// A one-line summary for logs and benchmark reports.
    pub fn summary(&self) -> String {
        let names = [
            ("AVX2", self.avx2),
            ("FMA", self.fma),
            ("F16C", self.f16c),
            ("AVX512F", self.avx512f),
            ("AVX512BW", self.avx512bw),
            ("AVX512_VNNI", self.avx512vnni),
            ("AVX_VNNI", self.avxvnni),
            ("NEON", self.neon),
            ("DOTPROD", self.dotprod),
        ];
        let on: Vec<&str> = names.iter().filter(|(_, b)| *b).map(|(n, _)| *n).collect();
        if on.is_empty() {
            "scalar".into()
        } else {
            on.join(" ")
        }
    }
}

pub fn features() -> &'static CpuFeatures {
    static F: OnceLock<CpuFeatures> = OnceLock::new();
    F.get_or_init(CpuFeatures::detect)
}
