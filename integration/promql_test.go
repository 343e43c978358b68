package integration

import (
	"fmt"
	"strings"
	"testing"
)

// A promSelector is one vector selector of a PromQL expression: a metric name
// and its label matchers.
type promSelector struct {
	metric   string
	matchers []promMatcher
}

type promMatcher struct{ label, op, value string }

func (s promSelector) String() string {
	var ms []string
	for _, m := range s.matchers {
		ms = append(ms, fmt.Sprintf("%s%s%q", m.label, m.op, m.value))
	}
	return s.metric + "{" + strings.Join(ms, ",") + "}"
}

func (s promSelector) has(label, op, value string) bool {
	for _, m := range s.matchers {
		if m == (promMatcher{label, op, value}) {
			return true
		}
	}
	return false
}

// PromQL words that are not metric names where an identifier may stand.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"group_left": true, "group_right": true, "inf": true, "nan": true,
	// aggregations, which may be followed by `by (…)` before their `(`
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// Words followed by a parenthesised list of label names.
var labelListKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// promSelectors lists the vector selectors of a PromQL expression (with
// Grafana's $variables in it): every metric name, with the label matchers
// in the braces after it. Function and aggregation names, keywords, label
// lists (by, without, on, ignoring, group_left, group_right), strings,
// numbers, durations and ranges in [...] are not metric names. A selector
// without a metric name ({__name__=…}) is an error: the test could not
// tell what it needs.
func promSelectors(expr string) ([]promSelector, error) {
	var out []promSelector
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || '0' <= c && c <= '9' }
	skipSpace := func(i int) int {
		for i < len(expr) && strings.IndexByte(" \t\r\n", expr[i]) >= 0 {
			i++
		}
		return i
	}
	skipString := func(i int) (int, error) { // expr[i] is the opening quote
		q := expr[i]
		for j := i + 1; j < len(expr); j++ {
			if expr[j] == '\\' && q != '`' {
				j++
			} else if expr[j] == q {
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string at %d", i)
	}
	// matchers parses {l="v", ...} at expr[i] == '{'.
	matchers := func(i int) ([]promMatcher, int, error) {
		var ms []promMatcher
		i++
		for {
			i = skipSpace(i)
			if i < len(expr) && expr[i] == '}' {
				return ms, i + 1, nil
			}
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			if j == i {
				return nil, 0, fmt.Errorf("label name expected at %d", i)
			}
			label := expr[i:j]
			j = skipSpace(j)
			var op string
			for _, o := range []string{"=~", "!~", "!=", "="} {
				if strings.HasPrefix(expr[j:], o) {
					op = o
					break
				}
			}
			if op == "" {
				return nil, 0, fmt.Errorf("matcher operator expected at %d", j)
			}
			j = skipSpace(j + len(op))
			if j >= len(expr) || (expr[j] != '"' && expr[j] != '\'' && expr[j] != '`') {
				return nil, 0, fmt.Errorf("string expected at %d", j)
			}
			end, err := skipString(j)
			if err != nil {
				return nil, 0, err
			}
			value := expr[j+1 : end-1]
			if expr[j] != '`' {
				value = strings.NewReplacer(`\\`, `\`, `\"`, `"`, `\'`, `'`).Replace(value)
			}
			ms = append(ms, promMatcher{label, op, value})
			i = skipSpace(end)
			if i < len(expr) && expr[i] == ',' {
				i++
			} else if i >= len(expr) || expr[i] != '}' {
				return nil, 0, fmt.Errorf("',' or '}' expected at %d", i)
			}
		}
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '[': // a range or subquery: durations, $__rate_interval
			end := strings.IndexByte(expr[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("unclosed [ at %d", i)
			}
			i += end + 1
		case c == '{':
			return nil, fmt.Errorf("selector without a metric name at %d", i)
		case c == '$': // a Grafana variable: $name or ${name}
			i++
			if i < len(expr) && expr[i] == '{' {
				end := strings.IndexByte(expr[i:], '}')
				if end < 0 {
					return nil, fmt.Errorf("unclosed ${ at %d", i)
				}
				i += end + 1
			}
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
		case '0' <= c && c <= '9' || c == '.': // numbers and durations
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			word := expr[i:j]
			next := skipSpace(j)
			switch {
			case labelListKeywords[strings.ToLower(word)] && next < len(expr) && expr[next] == '(':
				end := strings.IndexByte(expr[next:], ')')
				if end < 0 {
					return nil, fmt.Errorf("unclosed label list after %s", word)
				}
				i = next + end + 1
			case promqlKeywords[strings.ToLower(word)]:
				i = j
			case next < len(expr) && expr[next] == '(': // a function
				i = j
			default:
				s := promSelector{metric: word}
				i = j
				if next < len(expr) && expr[next] == '{' {
					ms, end, err := matchers(next)
					if err != nil {
						return nil, err
					}
					s.matchers, i = ms, end
				}
				out = append(out, s)
			}
		default:
			i++
		}
	}
	return out, nil
}

// The extractor finds what the panels' kinds of expression name, and only
// that.
func TestSelectorsOfPromQL(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`meshfs_peers`, []string{`meshfs_peers{}`}},
		{`rate(meshfs_exchange_total{event="byte_sent",instance=~"$instance"}[$__rate_interval])`,
			[]string{`meshfs_exchange_total{event="byte_sent",instance=~"$instance"}`}},
		{`histogram_quantile(0.99, sum by (instance, le) (rate(x_bucket{a!="b"}[5m])))`, []string{`x_bucket{a!="b"}`}},
		{`sum(rate(a_sum[1m])) by (le) / on (instance) group_left (kind) sum without (x) (b_count offset 5m)`,
			[]string{`a_sum{}`, `b_count{}`}},
		{`used{kind="used"} / ignoring (kind) (quota{kind="quota"} > 0) and bool 1`,
			[]string{`used{kind="used"}`, `quota{kind="quota"}`}},
		{`label_replace(up, "dst", "$1", "src", "(.*)") * 60`, []string{`up{}`}},
		{`topk(3, a{l=~"x|y", m='q\'s'}[1h:5m])`, []string{`a{l=~"x|y",m="q's"}`}},
		{`increase(meshfs_gc_bytes_freed_total{instance=~"${instance}"}[$__range])`,
			[]string{`meshfs_gc_bytes_freed_total{instance=~"${instance}"}`}},
	} {
		sels, err := promSelectors(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		var got []string
		for _, s := range sels {
			got = append(got, s.String())
		}
		if strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("promSelectors(%s) = %v, want %v", c.expr, got, c.want)
		}
	}
	for _, bad := range []string{`{__name__="x"}`, `x{a="b"`, `rate(x[5m)`, `x{a=b}`} {
		if _, err := promSelectors(bad); err == nil {
			t.Errorf("promSelectors(%s): no error", bad)
		}
	}
}
