package policy

import (
	"testing"
)

var sqlTests = []struct {
	query    string
	mutation bool
}{
	{"SELECT * FROM orders WHERE id = 7", false},
	{"select id, total from orders o join customers c on c.id = o.customer_id limit 10", false},
	{"SELECT 1; SELECT 2", false},
	{"SELECT a FROM t UNION SELECT b FROM u", false},
	{"WITH recent AS (SELECT * FROM orders WHERE created > NOW() - INTERVAL 1 DAY) SELECT count(*) FROM recent", false},
	{"SELECT * FROM t WHERE id IN (SELECT id FROM u)", false},
	{"SHOW TABLES", false},
	{"SHOW CREATE TABLE orders", false},
	{"DESCRIBE orders", false},
	{"DESC orders", false},
	{"EXPLAIN SELECT * FROM orders", false},
	{"TABLE orders", false},
	{"VALUES ROW(1, 2)", false},

	{"INSERT INTO orders (id) VALUES (1)", true},
	{"UPDATE orders SET total = 0", true},
	{"DELETE FROM orders", true},
	{"REPLACE INTO orders VALUES (1)", true},
	{"DROP TABLE orders", true},
	{"TRUNCATE TABLE orders", true},
	{"CREATE TABLE x (id INT)", true},
	{"ALTER TABLE orders ADD COLUMN note TEXT", true},
	{"GRANT ALL ON *.* TO 'bob'@'%'", true},
	{"SET GLOBAL max_connections = 1", true},
	{"SET @x = 1", true},
	{"LOAD DATA INFILE '/tmp/x' INTO TABLE orders", true},
	{"CALL refund_all()", true},
	{"LOCK TABLES orders WRITE", true},
	{"SELECT * FROM orders FOR UPDATE", true},
	{"SELECT * FROM orders LOCK IN SHARE MODE", true},
	{"SELECT * FROM orders INTO OUTFILE '/tmp/orders.csv'", true},
	{"SELECT id INTO @v FROM orders LIMIT 1", true},
	{"SELECT @v := id FROM orders", true},
	{"SELECT GET_LOCK('x', 10)", true},
	{"SELECT SLEEP(100)", true},
	{"SELECT * FROM t WHERE id IN (SELECT id FROM u FOR UPDATE)", true},
	{"SELECT 1; DELETE FROM orders", true},
	{"SELECT 1 UNION SELECT 2 FOR UPDATE", true},
	{"EXPLAIN ANALYZE SELECT * FROM orders", true},
	{"EXPLAIN DELETE FROM orders", true},
	{"BEGIN", true},
	{"USE payroll", true},
	{"KILL 42", true},
	{"PREPARE s FROM 'DELETE FROM orders'", true},

	// Not parsable: fail closed.
	{"", true},
	{"   ", true},
	{"SELEC * FROM orders", true},
	{"SELECT * FROM orders WHERE", true},
	{"SELECT 'a'::text", true},      // Postgres cast
	{"COPY orders TO STDOUT", true}, // Postgres COPY
	{"INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", true},
	{"SELECT * FROM t RETURNING id", true},
}

func TestIsMutation(t *testing.T) {
	for _, tt := range sqlTests {
		if got := isMutation(tt.query); got != tt.mutation {
			t.Errorf("isMutation(%q) = %v, want %v", tt.query, got, tt.mutation)
		}
	}
}

var hostTests = []struct {
	url  string
	host string
	ok   bool
}{
	{"https://api.example.com/v1", "api.example.com", true},
	{"https://API.Example.COM:8443/v1?q=1", "api.example.com", true},
	{"http://user:pw@example.com", "example.com", true},
	{"http://[::1]:8080/x", "::1", true},
	{"http://[2001:DB8::1]/", "2001:db8::1", true},
	{"http://127.0.0.1:7070", "127.0.0.1", true},
	{"ftp://files.example.org/a", "files.example.org", true},
	{"//cdn.example.net/lib.js", "cdn.example.net", true},
	{"example.com/path", "", false},
	{"/relative/path", "", false},
	{"mailto:bob@example.com", "", false},
	{"", "", false},
	{"http://%zz/", "", false},
	{"http://[::1/", "", false},
	{"https://", "", false},
	{"//]0", "", false},
	{"http://exa mple.com/", "", false},
	{"http://bücher.example/", "bücher.example", true},
}

func TestHostOf(t *testing.T) {
	for _, tt := range hostTests {
		host, ok := hostOf(tt.url)
		if host != tt.host || ok != tt.ok {
			t.Errorf("hostOf(%q) = %q, %v, want %q, %v", tt.url, host, ok, tt.host, tt.ok)
		}
	}
}

var ibanTests = []struct {
	iban  string
	valid bool
}{
	{"DE89 3704 0044 0532 0130 00", true},
	{"DE89370400440532013000", true},
	{"de89370400440532013000", true},
	{"GB82 WEST 1234 5698 7654 32", true},
	{"FR14 2004 1010 0505 0001 3M02 606", true},
	{"NL91 ABNA 0417 1643 00", true},
	{"CH93 0076 2011 6238 5295 7", true},
	{"NO93 8601 1117 947", true},
	{"BE68 5390 0754 7034", true},

	{"DE89 3704 0044 0532 0130 01", false}, // check digits
	{"DE88 3704 0044 0532 0130 00", false},
	{"DE89 3704 0044 0532 0130 0", false}, // too short for DE
	{"DE89 3704 0044 0532 0130 000", false},
	{"XX89 3704 0044 0532 0130 00", false}, // unknown country
	{"US64 SVBK US6S 3300 9673 8637", false},
	{"DE89-3704-0044-0532-0130-00", false},
	{"DE8937040044053201300\u00e9", false},
	{"", false},
	{"DE", false},
	{"1234", false},
	{"DEAB370400440532013000", false},
	{"DE89 3704 0044 0532 0130 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00", false},
}

func TestValidIBAN(t *testing.T) {
	for _, tt := range ibanTests {
		if got := validIBAN(tt.iban); got != tt.valid {
			t.Errorf("validIBAN(%q) = %v, want %v", tt.iban, got, tt.valid)
		}
	}
}

// TestBuiltinsInRego calls each function from a rule, as policies do, with
// arguments of the right and the wrong type.
func TestBuiltinsInRego(t *testing.T) {
	e := mustCompile(t, `package corral.authz
deny contains "glob" if corral.glob.match(input.action.arguments.pattern, input.action.target)
deny contains "sql" if corral.sql.is_mutation(input.action.arguments.sql)
deny contains "host" if corral.url.host(input.action.arguments.url) == "evil.example"
deny contains "iban" if corral.iban.valid(input.action.arguments.iban)
allow := true
`)
	tests := []struct {
		args map[string]any
		want []string
	}{
		{map[string]any{}, []string{}},
		{map[string]any{"pattern": "crm.*"}, []string{"glob"}},
		{map[string]any{"pattern": "erp.*"}, []string{}},
		{map[string]any{"pattern": 5}, []string{}}, // wrong type: undefined
		{map[string]any{"sql": "DELETE FROM t"}, []string{"sql"}},
		{map[string]any{"sql": "SELECT 1"}, []string{}},
		{map[string]any{"sql": true}, []string{}},
		{map[string]any{"url": "https://EVIL.example:443/x"}, []string{"host"}},
		{map[string]any{"url": "evil.example"}, []string{}},
		{map[string]any{"url": []any{}}, []string{}},
		{map[string]any{"iban": "DE89 3704 0044 0532 0130 00"}, []string{"iban"}},
		{map[string]any{"iban": "DE00"}, []string{}},
		{map[string]any{"iban": nil}, []string{}},
	}
	for _, tt := range tests {
		in := &Input{Action: Action{Kind: KindTool, Target: "crm.find", Arguments: tt.args}}
		d, err := e.Decide(t.Context(), in)
		if err != nil {
			t.Errorf("Decide(%v) error %v", tt.args, err)
			continue
		}
		if !equalStrings(d.Reasons, tt.want) && !(len(tt.want) == 0 && d.Effect == Allow) {
			t.Errorf("Decide(%v) = %v %v, want reasons %v", tt.args, d.Effect, d.Reasons, tt.want)
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
