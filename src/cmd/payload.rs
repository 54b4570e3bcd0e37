//! Where `esc publish` gets its payloads: the command line, a file or stdin; one per line or the
//! whole input; text or hex. Plus `--header name=value` parsing.

use std::io::Read;
use std::path::Path;

/// How input bytes become payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// The whole input is one payload (default: one payload per line, blank lines skipped).
    pub whole: bool,
    /// Each payload is written in hex (whitespace ignored).
    pub hex: bool,
}

/// Reads `path` (`-` = stdin) and splits it into payloads.
#[allow(clippy::disallowed_methods)] // the CLI reads a user's file, not a simulated disk
pub fn read_file(path: &Path, format: Format) -> Result<Vec<Vec<u8>>, String> {
    let mut input = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut input).map_err(|e| format!("reading stdin: {e}"))?;
    } else {
        input = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    split(&input, format).map_err(|e| {
        format!("{}: {e}", if path == Path::new("-") { "stdin".into() } else { path.display().to_string() })
    })
}

/// Splits input into payloads as `format` says.
pub fn split(input: &[u8], format: Format) -> Result<Vec<Vec<u8>>, String> {
    if format.whole {
        let one = if format.hex { hex(input)? } else { input.to_vec() };
        return Ok(vec![one]);
    }
    let mut out = Vec::new();
    for (i, line) in input.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push(if format.hex {
            hex(line).map_err(|e| format!("line {}: {e}", i + 1))?
        } else {
            line.to_vec()
        });
    }
    Ok(out)
}

/// Decodes hex digits, ignoring ASCII whitespace.
pub fn hex(text: &[u8]) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    let val = |b: u8| match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err(format!("{:?} is not a hex digit", b as char)),
    };
    digits.chunks(2).map(|p| Ok(val(p[0])? << 4 | val(p[1])?)).collect()
}

/// Parses `name=value` (the value may be empty; the name may not).
pub fn header(arg: &str) -> Result<(String, Vec<u8>), String> {
    match arg.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.as_bytes().to_vec())),
        _ => Err(format!("--header {arg:?}: expected NAME=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: Format = Format { whole: false, hex: false };

    #[test]
    fn one_payload_per_line_without_blank_lines_or_carriage_returns() {
        let got = split(b"a\r\n\nb c\n  \n\xff\n", LINES).unwrap();
        assert_eq!(got, vec![b"a".to_vec(), b"b c".to_vec(), vec![0xff]]);
    }

    #[test]
    fn whole_input_is_one_payload_byte_for_byte() {
        let got = split(b"a\n\nb\n", Format { whole: true, hex: false }).unwrap();
        assert_eq!(got, vec![b"a\n\nb\n".to_vec()]);
    }

    #[test]
    fn hex_lines_and_errors_name_the_line() {
        let f = Format { whole: false, hex: true };
        assert_eq!(split(b"00ff\n 0A 0b \n", f).unwrap(), vec![vec![0, 255], vec![10, 11]]);
        assert!(split(b"00\nabc\n", f).unwrap_err().contains("line 2: odd number"));
        assert!(split(b"zz\n", f).unwrap_err().contains("'z' is not a hex digit"));
        assert_eq!(split(b"01 02\n03", Format { whole: true, hex: true }).unwrap(), vec![vec![1, 2, 3]]);
    }

    #[test]
    fn headers_are_name_equals_value() {
        assert_eq!(header("a=b=c").unwrap(), ("a".into(), b"b=c".to_vec()));
        assert_eq!(header("empty=").unwrap(), ("empty".into(), Vec::new()));
        assert!(header("=x").is_err() && header("novalue").is_err());
    }
}
