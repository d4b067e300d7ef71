//! Parsing: what is accepted, what is refused and where, the error message, and the limits.

use crate::{ParseError, Selector, MAX_DEPTH, MAX_LEN};

#[test]
fn accepted() {
    let accepted = [
        "name = 'James'",
        "name = 'James' AND rank > 100 OR NOT (flag)",
        "x = 1 and y = 2",
        "((x = 1) and (y = 2))",
        "flag",
        "(flag)",
        "NOT flag",
        "TRUE",
        "NULL",
        "NULL IS NULL",
        "5 IS NULL",
        "1 = TRUE",
        "TRUE = FALSE",
        "(a = 1) = TRUE",
        "a = b = c",
        "a LIKE 'x' LIKE 'y'",
        "a LIKE 'x' = TRUE",
        "-a > -1",
        "a > -'x'",
        "+a IN ('x')",
        "$a_1 = _b$",
        "a = 1 -- x",
        "a = 'multi\nline'",
        "a BETWEEN -1 AND +1",
        "a NOT BETWEEN 1 AND 2 AND b",
        "a LIKE '%' ESCAPE '%'",
        "a LIKE '%' ESCAPE '\u{e9}'",
        "a=1AND b=2",
        "1.5E+3 < a",
        "0xABCDEF = a",
        "9999999999999999999999999999 = a",
        "a = 1\t\r\n\x0c",
        "NOTE = 1 AND ORDER = 2 AND INSIDE = 3 AND ISNULL = 4",
    ];
    for text in accepted {
        if let Err(error) = Selector::parse(text) {
            panic!("{text:?} should parse: {error}");
        }
    }
}

#[test]
fn refused_with_column_and_token() {
    let refused = [
        ("", 1, ""),
        ("   ", 4, ""),
        ("name =", 7, ""),
        ("name = 'James' AND", 19, ""),
        ("AND name = 'x'", 1, "AND"),
        ("name = 'x' AND AND b", 16, "AND"),
        ("a = 1 AMD b = 2", 7, "AMD"),
        ("prop1 = prop2 foo AND string = 'Test'", 15, "foo"),
        ("=TEST 'test'", 1, "="),
        ("3+5", 1, "3+5"),
        ("'x'", 1, "'x'"),
        ("-flag", 1, "-flag"),
        ("TRUE AND 3+5", 10, "3+5"),
        ("NOT 5", 5, "5"),
        ("name = 'James", 8, "'James"),
        ("name == 'x'", 7, "="),
        ("name != 'x'", 6, "!"),
        (". = 1", 1, "."),
        ("a = #", 5, "#"),
        ("na\u{ef}ve = 1", 3, "\u{ef}"),
        ("(a = 1", 7, ""),
        ("a = 1)", 6, ")"),
        ("a IS 1", 6, "1"),
        ("a IS NOT 1", 10, "1"),
        // ActiveMQ's checkLessThanOperand: no string, boolean or NULL literal, no condition.
        ("name > 'm'", 8, "'m'"),
        ("'m' < name", 1, "'m'"),
        ("count > TRUE", 9, "TRUE"),
        ("count <= NULL", 10, "NULL"),
        ("(a = 1) > 0", 1, "(a = 1)"),
        ("NOT count > 1", 1, "NOT count"),
        ("count BETWEEN 'a' AND 'z'", 15, "'a'"),
        ("count BETWEEN 1 AND 'z'", 21, "'z'"),
        ("count BETWEEN 1 OR 2", 17, "OR"),
        // ActiveMQ's checkEqualOperand and checkEqualOperandCompatability.
        ("name = NULL", 8, "NULL"),
        ("NULL <> name", 1, "NULL"),
        ("TRUE = 1", 8, "1"),
        ("FALSE = 'x'", 9, "'x'"),
        // ActiveMQ's IN: a property on the left, string literals in the list.
        ("count IN (1, 2)", 11, "1"),
        ("count + 1 IN ('2')", 1, "count + 1"),
        ("'a' IN ('a')", 1, "'a'"),
        ("name IN ()", 10, ")"),
        ("name IN ('a' 'b')", 14, "'b'"),
        ("name IN 'a'", 9, "'a'"),
        ("name IN ('a',)", 14, ")"),
        ("name LIKE name", 11, "name"),
        ("name LIKE 'a' ESCAPE 'ab'", 22, "'ab'"),
        ("name LIKE 'a' ESCAPE ''", 22, "''"),
        ("name LIKE 'a' ESCAPE '\u{1f600}'", 22, "'\u{1f600}'"),
        ("name LIKE 'a' ESCAPE", 21, ""),
        // ActiveMQ's literal tokens: no F/D suffix, no L after hex or octal, no 8 or 9 in octal.
        ("1.5F = 1.5", 4, "F"),
        ("1.5D = 1.5", 4, "D"),
        ("0x1FL = 31", 5, "L"),
        ("0L = 0", 2, "L"),
        ("09 = 9", 2, "9"),
        ("0x8000000000000000 = 1", 1, "0x8000000000000000"),
        ("01000000000000000000000 = 1", 1, "01000000000000000000000"),
        ("XPATH '//a'", 1, "XPATH"),
        ("xquery 'a'", 1, "xquery"),
        ("REGEX('a', name)", 1, "REGEX"),
        // ActiveMQ: a `--` comment needs a line end, so here it is `1 - (-two) words`.
        ("a = 1 -- two words", 14, "words"),
        ("name = 'x' /* unclosed", 13, "*"),
        ("caf\u{e9} = 'x'", 4, "\u{e9}"),
        ("t = '\u{e9}' AND AND", 13, "AND"),
    ];
    let mut failures = Vec::new();
    for (text, column, token) in refused {
        match Selector::parse(text) {
            Ok(_) => failures.push(format!("{text:?} parsed")),
            Err(error) if (error.column, error.token.as_str()) != (column, token) => {
                failures.push(format!(
                    "{text:?}: expected column {column} {token:?}, got {error:?}"
                ));
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn messages_point_at_the_token_on_one_line() {
    let message = |text: &str| Selector::parse(text).unwrap_err().to_string();
    assert_eq!(
        message("name = 'x' AND AND b"),
        "unexpected \"AND\" at column 16 of the selector \
         (expected a value: a property name, a literal, NOT, a sign or '(')"
    );
    assert_eq!(
        message("name ="),
        "unexpected end of selector at column 7 \
         (expected a value: a property name, a literal, NOT, a sign or '(')"
    );
    assert_eq!(
        message("name = 'a\nb"),
        "unexpected \"'a\\nb\" at column 8 of the selector (expected a closing quote (') for this string)"
    );
    assert!(message("XPATH '//a'").contains("XPATH and XQUERY selectors are not supported"));
    let long = format!("name = '{}", "x".repeat(100));
    let shown = Selector::parse(&long).unwrap_err();
    assert_eq!(
        shown.token.chars().count(),
        41,
        "40 characters and an ellipsis: {shown}"
    );
}

#[test]
fn columns_count_from_the_selector_as_given() {
    let error = Selector::parse("convert_string_expressions:name = = 1").unwrap_err();
    assert_eq!((error.column, error.token.as_str()), (35, "="));
    let error = Selector::parse_stomp("name = = 1").unwrap_err();
    assert_eq!((error.column, error.token.as_str()), (8, "="));
    // The STOMP transport prefixes whatever the client sent, so a client's own prefix is text.
    assert!(Selector::parse_stomp("convert_string_expressions:a = 1").is_err());
    assert_eq!(
        Selector::parse("convert_string_expressions:a = 1")
            .unwrap()
            .text(),
        "convert_string_expressions:a = 1"
    );
}

#[test]
fn length_is_capped() {
    let longest = format!("a = '{}'", "x".repeat(MAX_LEN - 6));
    assert_eq!(longest.len(), MAX_LEN);
    assert!(Selector::parse(&longest).is_ok());
    let too_long = format!("a = '{}'", "x".repeat(MAX_LEN - 5));
    let error = Selector::parse(&too_long).unwrap_err();
    assert_eq!(error.column, MAX_LEN + 1);
    assert!(error.expected.contains("4096 bytes"), "{error}");
}

#[test]
fn nesting_is_capped() {
    let parens = |depth: usize| format!("{}a{}", "(".repeat(depth), ")".repeat(depth));
    assert!(Selector::parse(&parens(MAX_DEPTH)).is_ok());
    let error = Selector::parse(&parens(MAX_DEPTH + 1)).unwrap_err();
    assert_eq!((error.column, error.token.as_str()), (MAX_DEPTH + 1, "("));

    let nots = |depth: usize| format!("{}a", "NOT ".repeat(depth));
    assert!(Selector::parse(&nots(MAX_DEPTH - 2)).is_ok());
    assert!(Selector::parse(&nots(MAX_DEPTH + 1)).is_err());
    assert!(Selector::parse(&format!("a = {}1", "-".repeat(MAX_DEPTH + 1))).is_err());

    let sums = |terms: usize| format!("a{} > 0", " + 1".repeat(terms));
    assert!(Selector::parse(&sums(MAX_DEPTH - 2)).is_ok());
    let error = Selector::parse(&sums(MAX_DEPTH + 10)).unwrap_err();
    assert_eq!(error.token, "+");
    assert_eq!(error.column, 4 * MAX_DEPTH - 1, "{error}");

    let deep = format!("{}a = 1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(matches!(Selector::parse(&deep), Err(ParseError { .. })));
}

/// A small deterministic fuzz: no input, however mangled, may panic the parser or the evaluator.
#[test]
fn mangled_input_never_panics() {
    let pieces = [
        "a",
        "name",
        "'x'",
        "'",
        "''",
        "1",
        "0x",
        "0x1F",
        "07",
        "1.",
        ".5",
        "1e",
        "9999999999999999999999",
        " ",
        "(",
        ")",
        ",",
        "=",
        "<>",
        "<",
        ">=",
        "+",
        "-",
        "*",
        "/",
        "%",
        "--",
        "/*",
        "*/",
        "\n",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "ESCAPE",
        "BETWEEN",
        "IS",
        "NULL",
        "TRUE",
        "XPATH",
        "\u{e9}",
        "\u{1f600}",
        "count",
        "trueProp",
    ];
    let message = super::message();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        let mut text = String::new();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let length = state % 12;
        for _ in 0..=length {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(pieces[(state % pieces.len() as u64) as usize]);
            text.push(' ');
        }
        if let Ok(selector) = Selector::parse(&text) {
            selector.matches(&message);
        }
    }
}
