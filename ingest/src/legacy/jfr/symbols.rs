//! Pyroscope's rewriting of JVM symbols whose names embed a generated number or a hash: the
//! same code would otherwise be a new function in every process (and every upload).

/// `symbol` with a generated part replaced by `_`, or unchanged.
pub(crate) fn rewrite(symbol: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    const ACCESSOR: &str = "jdk/internal/reflect/GeneratedMethodAccessor";
    if let Some(rest) = symbol.strip_prefix(ACCESSOR)
        && is_digits(rest)
    {
        return Cow::Owned(format!("{ACCESSOR}_"));
    }
    if let Some(i) = symbol.rfind("$$Lambda")
        && lambda_suffix(&symbol[i + "$$Lambda".len()..])
    {
        return Cow::Owned(format!("{}$$Lambda_", &symbol[..i]));
    }
    const CGLIB: &str = "$$EnhancerBySpringCGLIB$$";
    if let Some(i) = symbol.find(CGLIB) {
        return Cow::Owned(format!("{}{CGLIB}_", &symbol[..i]));
    }
    if let Some(library) = library(symbol) {
        return Cow::Borrowed(library);
    }
    Cow::Borrowed(symbol)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What follows `$$Lambda` in a generated lambda class: digits, or `[$][digits](.|/)[0x]hex`.
fn lambda_suffix(tail: &str) -> bool {
    if is_digits(tail) {
        return true;
    }
    let tail = tail.strip_prefix('$').unwrap_or(tail);
    let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
    let tail = &tail[digits..];
    let Some(tail) = tail.strip_prefix('.').or_else(|| tail.strip_prefix('/')) else {
        return false;
    };
    is_hex(tail.strip_prefix("0x").unwrap_or(tail))
}

/// The stable name of a native library extracted under a versioned or hashed file name.
fn library(symbol: &str) -> Option<&'static str> {
    let s = symbol.strip_suffix(" (deleted)").unwrap_or(symbol);
    let s = s
        .strip_prefix("./tmp/")
        .or_else(|| s.strip_prefix("/tmp/"))
        .unwrap_or(s);
    let s = s.strip_suffix(".so")?;
    // libzstd-jni-<a.b.c>-<digits>.so
    if let Some(rest) = s.strip_prefix("libzstd-jni-")
        && let Some((version, build)) = rest.rsplit_once('-')
        && is_digits(build)
        && version.split('.').count() == 3
        && version.split('.').all(is_digits)
    {
        return Some("libzstd-jni-_.so");
    }
    // [lib]amazonCorrettoCryptoProvider[NativeLibraries.]<16 hex>[/libcrypto|/libamazonCorrettoCryptoProvider].so
    let rest = s.strip_prefix("lib").unwrap_or(s);
    if let Some(rest) = rest.strip_prefix("amazonCorrettoCryptoProvider") {
        let rest = rest.strip_prefix("NativeLibraries.").unwrap_or(rest);
        let hash = rest
            .strip_suffix("/libcrypto")
            .or_else(|| rest.strip_suffix("/libamazonCorrettoCryptoProvider"))
            .unwrap_or(rest);
        if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some("libamazonCorrettoCryptoProvider_.so");
        }
    }
    const HASH: &str = "17b9a1d8156277a98ccc871afa9a8f69215f92";
    if let Some(platform) = s
        .strip_prefix("libasyncProfiler-")
        .and_then(|r| r.strip_suffix(HASH))
        .and_then(|r| r.strip_suffix('-'))
        && matches!(
            platform,
            "linux-arm64" | "linux-musl-x64" | "linux-x64" | "macos"
        )
    {
        return Some("libasyncProfiler-_.so");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn generated_names_become_stable() {
        for (from, to) in [
            (
                "jdk/internal/reflect/GeneratedMethodAccessor42",
                "jdk/internal/reflect/GeneratedMethodAccessor_",
            ),
            ("Foo$$Lambda$4/1283928880", "Foo$$Lambda_"),
            ("Foo$$Lambda$8/0x0000000800c01220", "Foo$$Lambda_"),
            ("Fib$$Lambda.0x00007ffa600c4da0", "Fib$$Lambda_"),
            ("Foo$$Lambda17", "Foo$$Lambda_"),
            (
                "com/x/Svc$$EnhancerBySpringCGLIB$$1a2b3c",
                "com/x/Svc$$EnhancerBySpringCGLIB$$_",
            ),
            ("/tmp/libzstd-jni-1.5.5-4.so (deleted)", "libzstd-jni-_.so"),
            (
                "libamazonCorrettoCryptoProviderNativeLibraries.0123456789abcdef/libcrypto.so",
                "libamazonCorrettoCryptoProvider_.so",
            ),
            (
                "libasyncProfiler-linux-x64-17b9a1d8156277a98ccc871afa9a8f69215f92.so",
                "libasyncProfiler-_.so",
            ),
        ] {
            assert_eq!(rewrite(from), to, "{from}");
        }
        for same in [
            "java/lang/Thread",
            "Foo$$Lambda",
            "Foo$$LambdaX",
            "jdk/internal/reflect/GeneratedMethodAccessorX",
            "libzstd-jni-1.5-4.so",
        ] {
            assert_eq!(rewrite(same), same);
        }
    }
}
