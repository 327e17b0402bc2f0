//! Which instruction set the quantizers use, decided once per process. `IQK_RS_SIMD`
//! (`scalar`, `avx2`, `avx512`, `neon`, `auto`) overrides the choice so tests can pin every path;
//! asking for a path the CPU lacks falls back to the best available one with a warning.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Scalar,
    Avx2,
}

fn detect() -> Path {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        return Path::Avx2;
    }
    Path::Scalar
}

/// The path the quantization searches use.
pub fn quantize_path() -> Path {
    static PATH: OnceLock<Path> = OnceLock::new();
    *PATH.get_or_init(|| {
        let best = detect();
        match std::env::var("IQK_RS_SIMD")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Ok("scalar") => Path::Scalar,
            Ok("avx2") | Ok("avx512") if best == Path::Avx2 => Path::Avx2,
            Ok("auto") | Err(_) => best,
            Ok(other) => {
                eprintln!(
                    "iqk_rs: IQK_RS_SIMD={other} is not available on this CPU; using {best:?}"
                );
                best
            }
        }
    })
}
