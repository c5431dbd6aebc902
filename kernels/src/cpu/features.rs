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
    pub avx512vl: bool,
    pub avx512vnni: bool,
    pub avxvnni: bool,
    pub neon: bool,
    pub dotprod: bool,
    /// AVX-512 BF16 (`vcvtne2ps2bf16`: f32 to bf16, 32 at a time).
    pub avx512bf16: bool,
    /// AMX tiles with bf16 products, tile state granted by the OS (see [`super::amx`]).
    pub amx_bf16: bool,
}

impl CpuFeatures {
    /// AVX2 with FMA: the baseline x86 SIMD path.
    pub fn has_avx2_fma(&self) -> bool {
        self.avx2 && self.fma
    }

    /// What the x86 quantized kernels need: AVX2 and FMA, plus F16C for the f16 block scales.
    pub fn has_avx2_kernels(&self) -> bool {
        self.avx2 && self.fma && self.f16c
    }

    /// What the AVX-512 kernels need on top of the AVX2 ones: 512-bit float and byte/word
    /// operations, and VNNI (`vpdpbusd`) on 256-bit vectors through AVX512VL.
    pub fn has_avx512_kernels(&self) -> bool {
        self.has_avx2_kernels() && self.avx512f && self.avx512bw && self.avx512vl && self.avx512vnni
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
                avx512vl: is_x86_feature_detected!("avx512vl"),
                avx512vnni: is_x86_feature_detected!("avx512vnni"),
                avxvnni: is_x86_feature_detected!("avxvnni"),
                avx512bf16: is_x86_feature_detected!("avx512bf16"),
                amx_bf16: is_x86_feature_detected!("avx512f") && super::amx::detect(),
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
            ("AVX512VL", self.avx512vl),
            ("AVX512_VNNI", self.avx512vnni),
            ("AVX_VNNI", self.avxvnni),
            ("NEON", self.neon),
            ("DOTPROD", self.dotprod),
            ("AVX512_BF16", self.avx512bf16),
            ("AMX_BF16", self.amx_bf16),
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

/// An instruction-set level that a kernel table is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    /// x86_64 AVX2 + FMA + F16C.
    Avx2,
    /// x86_64 AVX2 level plus AVX-512 F/BW/VL/VNNI.
    Avx512,
    /// aarch64 NEON.
    Neon,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// Whether this CPU (as `features()` reports it) can run kernels of this level.
    pub fn is_available(self) -> bool {
        let f = features();
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => cfg!(target_arch = "x86_64") && f.has_avx2_kernels(),
            Isa::Avx512 => cfg!(target_arch = "x86_64") && f.has_avx512_kernels(),
            Isa::Neon => cfg!(target_arch = "aarch64") && f.neon,
        }
    }

    /// The widest level available, the one the dispatch tables use.
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|i| i.is_available())
            .unwrap_or(Isa::Scalar)
    }

    /// Every level this CPU can run, narrowest first (tests run them all).
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }
}

/// Whether `QUANTIZE_ACTIVATIONS=f32` asks for unquantized activations in every matmul (the
/// model's exact function; default: 8-bit activations as llama.cpp computes).
pub fn exact_activations() -> bool {
    static F: OnceLock<bool> = OnceLock::new();
    *F.get_or_init(|| std::env::var("QUANTIZE_ACTIVATIONS").is_ok_and(|v| v == "f32"))
}
