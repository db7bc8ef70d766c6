package policy

import (
	"sync"

	"github.com/pingcap/tidb/pkg/parser"
	sqlast "github.com/pingcap/tidb/pkg/parser/ast"
	// The parser needs a driver for literal values; the test driver is the
	// small one meant for using the parser on its own.
	_ "github.com/pingcap/tidb/pkg/parser/test_driver"
)

// sqlParsers holds parsers for reuse: a parser is not safe for concurrent
// use, and a new one allocates its tables.
var sqlParsers = sync.Pool{New: func() any { return parser.New() }}

// isMutation reports whether a SQL text (MySQL dialect, one statement or
// several) may do anything but read. It fails closed: a text the parser
// cannot read, and any statement not known to be read-only, count as a
// mutation. Read-only are SELECT (with UNION and WITH) that neither locks
// rows nor writes INTO anything, SHOW, DESCRIBE, and EXPLAIN (without
// ANALYZE, which runs the statement) of a read-only statement; a call of a
// function with side effects (locks, sleeps, sequences, files) or a user
// variable assignment makes a SELECT a mutation too.
func isMutation(query string) (mutation bool) {
	defer func() {
		if recover() != nil {
			mutation = true // a parser bug must not read as "read-only"
		}
	}()
	p := sqlParsers.Get().(*parser.Parser)
	stmts, _, err := p.Parse(query, "", "")
	if err != nil || len(stmts) == 0 {
		sqlParsers.Put(p)
		return true
	}
	// The statements point into the parser's state: classify them before
	// the parser goes back to the pool.
	defer sqlParsers.Put(p)
	for _, s := range stmts {
		if !readOnly(s) {
			return true
		}
	}
	return false
}

// readOnly reports whether one statement is known to only read.
func readOnly(s sqlast.StmtNode) bool {
	switch s := s.(type) {
	case *sqlast.SelectStmt, *sqlast.SetOprStmt:
		return pureQuery(s)
	case *sqlast.ShowStmt:
		return true
	case *sqlast.ExplainStmt:
		// EXPLAIN ANALYZE runs the statement; DESCRIBE t is an EXPLAIN of
		// a SHOW. EXPLAIN of a plan digest has no statement to judge.
		return !s.Analyze && s.Stmt != nil && readOnly(s.Stmt)
	}
	return false
}

// pureQuery walks a query, subqueries and common table expressions
// included, for anything that writes or has side effects.
func pureQuery(n sqlast.Node) bool {
	v := &sideEffects{}
	n.Accept(v)
	return !v.found
}

// sideEffectFuncs are functions that a SELECT may call and that change
// state, wait, or read outside the database.
var sideEffectFuncs = map[string]bool{
	"get_lock": true, "release_lock": true, "release_all_locks": true,
	"sleep": true, "benchmark": true,
	"nextval": true, "setval": true, "lastval": true,
	"load_file":       true,
	"master_pos_wait": true, "source_pos_wait": true,
	"wait_for_executed_gtid_set": true, "wait_until_sql_thread_after_gtids": true,
}

// sideEffects is an ast.Visitor that records whether a query tree holds a
// locking read, a SELECT ... INTO, a user-variable assignment, a call of a
// function with side effects, or any statement other than a query.
type sideEffects struct{ found bool }

func (v *sideEffects) Enter(n sqlast.Node) (sqlast.Node, bool) {
	switch n := n.(type) {
	case *sqlast.SelectStmt:
		if (n.LockInfo != nil && n.LockInfo.LockType != sqlast.SelectLockNone) || n.SelectIntoOpt != nil {
			v.found = true
		}
	case *sqlast.VariableExpr:
		if n.Value != nil { // @x := expr
			v.found = true
		}
	case *sqlast.FuncCallExpr:
		if sideEffectFuncs[n.FnName.L] {
			v.found = true
		}
	case *sqlast.InsertStmt, *sqlast.UpdateStmt, *sqlast.DeleteStmt, *sqlast.LoadDataStmt, *sqlast.CallStmt:
		v.found = true
	}
	return n, v.found
}

func (v *sideEffects) Leave(n sqlast.Node) (sqlast.Node, bool) { return n, !v.found }
