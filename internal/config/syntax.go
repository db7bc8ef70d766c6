package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yaml.v3 reports a syntax error as "yaml: line N: problem", but N means
// different things (go.yaml.in/yaml/v3 v3.0.6, parser.fail):
//
//   - For a parser error (a good token in the wrong place: "did not find
//     expected key"), N is the 0-based line where the enclosing mapping,
//     sequence or value starts; but when that is the stream's first line, N is
//     the 0-based line of the offending token instead.
//   - For a scanner error (a bad token: "mapping values are not allowed in
//     this context", an unclosed quote), N is the 1-based line of the start of
//     the token being scanned (a quoted string, a key, a block scalar); but
//     when that is the stream's first line, N is the 1-based line where the
//     scanner stopped instead.
//   - When both are on the stream's first line, there is no N.
//
// So a badly indented line 10 in a document whose mapping starts at line 6
// reads "line 5", and one on line 4 of a single-document file "line 3".
// syntaxMessage finds the real lines by parsing again:
//
//  1. With a newline in front of the stream, nothing starts on its first
//     line, so N is always given and always the line where the enclosing
//     construct starts (0-based for a parser error, 1-based for a scanner
//     error, one line down either way), or for the parser's few problems
//     outside any construct, the line of the bad token.
//  2. The stream from that line on, with the construct now on its first line,
//     makes yaml.v3 report the line of the problem itself.
//
// Each parse must reproduce the original problem, and the first parse of step
// 2 the construct on the first line; if one does not, the message names only
// what is known.

// parserProblems are the problems yaml.v3's parser reports with the line where
// an enclosing construct starts, each with what that construct is.
var parserProblems = map[string]string{
	"did not find expected key":           "mapping",
	"did not find expected '-' indicator": "sequence",
	"did not find expected ',' or ']'":    "sequence",
	"did not find expected ',' or '}'":    "mapping",
	"did not find expected node content":  "value",
	"found undefined tag handle":          "value",
}

// parserProblemsAtToken are the parser's problems that carry no enclosing
// construct: yaml.v3 reports the 0-based line of the offending token, or none
// on the first line.
var parserProblemsAtToken = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
}

// scannerConstructs names the token that these problems of the scanner are
// found in, where the problem can be on a later line than the token's start.
// Any other problem of the scanner is on the line where its token starts.
var scannerConstructs = map[string]string{
	"found unexpected end of stream":                               "quoted string",
	"found unexpected document indicator":                          "quoted string",
	"found unknown escape character":                               "quoted string",
	"did not find expected hexdecimal number":                      "quoted string",
	"found invalid Unicode character escape code":                  "quoted string",
	"found a tab character where an indentation space is expected": "block scalar",
	"found a tab character that violates indentation":              "value",
	"could not find expected ':'":                                  "key",
}

// syntaxMessage words the syntax error err that yaml.v3 reported for data,
// as "line N: problem" with N the line of the file where the problem is, and
// where it is found inside a construct that starts on an earlier line, that
// line too.
func syntaxMessage(data []byte, err error) string {
	reported, problem := splitSyntaxError(err)
	shifted, again, ok := firstSyntaxError(data, true)
	construct, parser := parserProblems[problem]
	if !ok || again != problem || shifted == 0 {
		// Not reproduced (or never located, as for bad UTF-8). A scanner's
		// number is a line of the bad token; a parser's might be anything.
		if reported == 0 || parser || parserProblemsAtToken[problem] {
			return problem
		}
		return fmt.Sprintf("line %d: %s", reported, problem)
	}
	if parserProblemsAtToken[problem] {
		return fmt.Sprintf("line %d: %s", shifted, problem) // 0-based, one line down
	}
	start := shifted // a parser's line: 0-based, one line down
	if !parser {
		start, construct = shifted-1, scannerConstructs[problem]
	}
	at, found := problemLine(data, start, problem, parser, reported)
	switch {
	case found && (at == start || construct == ""):
		return fmt.Sprintf("line %d: %s", at, problem)
	case found:
		return fmt.Sprintf("line %d: %s in the %s that starts at line %d", at, problem, construct, start)
	case construct != "":
		return fmt.Sprintf("%s in the %s that starts at line %d", problem, construct, start)
	}
	return fmt.Sprintf("line %d: %s", start, problem) // a scanner's bad token
}

// problemLine finds the line of a problem that yaml.v3 found inside a
// construct starting at line start (step 2 above), given what it reported for
// the whole of data.
func problemLine(data []byte, start int, problem string, parser bool, reported int) (int, bool) {
	line := reported // the construct starts on data's first line: nothing to parse again
	if start > 1 {
		offset, ok := lineOffset(data, start)
		if !ok {
			return 0, false
		}
		rest := data[offset:]
		first := 2 // where a scanner reports rest's first line, one line down
		if parser {
			first = 1
		}
		if l, again, ok := firstSyntaxError(rest, true); !ok || again != problem || l != first {
			return 0, false // the construct does not start on rest's first line
		}
		l, again, ok := firstSyntaxError(rest, false)
		if !ok || again != problem {
			return 0, false
		}
		line = l
	}
	switch {
	case line == 0:
		return start, true // on the construct's first line
	case parser:
		return start + line, true // 0-based
	}
	return start + line - 1, true // 1-based
}

// firstSyntaxError parses data as a stream, as decode does, with a newline in
// front if shift is set, and returns the first syntax error: the line yaml.v3
// reports (0 if none) and the problem.
func firstSyntaxError(data []byte, shift bool) (line int, problem string, ok bool) {
	var r io.Reader = bytes.NewReader(data)
	if shift {
		r = io.MultiReader(strings.NewReader("\n"), r)
	}
	dec := yaml.NewDecoder(r)
	for {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			return 0, "", false
		}
		if err != nil {
			line, problem := splitSyntaxError(err)
			return line, problem, true
		}
	}
}

var syntaxLine = regexp.MustCompile(`^line ([0-9]+): `)

// splitSyntaxError splits "yaml: line 3: problem" into 3 and "problem".
func splitSyntaxError(err error) (int, string) {
	msg := yamlMessage(err)
	m := syntaxLine.FindStringSubmatch(msg)
	if m == nil {
		return 0, msg
	}
	line, err := strconv.Atoi(m[1])
	if err != nil {
		return 0, msg
	}
	return line, msg[len(m[0]):]
}

// lineOffset returns where the 1-based line n of data starts, counting line
// breaks as yaml.v3 does: CR LF, CR, LF, NEL, LS and PS.
func lineOffset(data []byte, n int) (int, bool) {
	for line, i := 1, 0; ; line++ {
		if line == n {
			return i, true
		}
		next, ok := nextLine(data, i)
		if !ok {
			return 0, false
		}
		i = next
	}
}

// nextLine returns where the line after the one holding data[i] starts.
func nextLine(data []byte, i int) (int, bool) {
	for ; i < len(data); i++ {
		switch {
		case data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n':
			return i + 2, true
		case data[i] == '\r' || data[i] == '\n':
			return i + 1, true
		case bytes.HasPrefix(data[i:], []byte("\u0085")):
			return i + 2, true
		case bytes.HasPrefix(data[i:], []byte("\u2028")), bytes.HasPrefix(data[i:], []byte("\u2029")):
			return i + 3, true
		}
	}
	return 0, false
}
