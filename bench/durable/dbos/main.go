// Command dbos measures durable steps per second on DBOS Transact for Go
// (github.com/dbos-inc/dbos-transact-golang) with its system database on
// PostgreSQL, running the workload every peer of bench/durable runs, each
// step a DBOS step (dbos.RunAsStep). It prints one JSON line
// (bench/README.md, "Durable steps").
//
// It is a module of its own, as test/otelcol is, so that DBOS's dependencies
// stay out of corral's build. Each run makes a schema of its own in the
// database corral_bench (created when missing) and drops it afterwards. Run it
// from this directory with
//
//	go run .
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// options are the command line beside the workload.
type options struct {
	server   string // PostgreSQL, without a database
	database string // created when missing
	keep     bool   // keep the run's schema
}

func main() {
	var w workload
	var o options
	fs := flag.NewFlagSet("dbos", flag.ExitOnError)
	w.flags(fs)
	fs.StringVar(&o.server, "postgres", "postgres://postgres@127.0.0.1:5432", "PostgreSQL server URL, without a database")
	fs.StringVar(&o.database, "database", "corral_bench", "database of DBOS's system tables, created when missing")
	fs.BoolVar(&o.keep, "keep", false, "keep the run's schema instead of dropping it")
	_ = fs.Parse(os.Args[1:])
	if err := w.check(); err != nil {
		fmt.Fprintln(os.Stderr, "dbos:", err)
		os.Exit(2)
	}
	if err := run(context.Background(), w, o); err != nil {
		fmt.Fprintln(os.Stderr, "dbos:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w workload, o options) (err error) {
	if err := createDatabase(ctx, o.server, o.database); err != nil {
		return err
	}
	dbURL := o.server + "/" + o.database + "?sslmode=disable"
	settings, err := serverSettings(ctx, dbURL)
	if err != nil {
		return err
	}
	schema := "bench_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if !o.keep {
		defer func() {
			if derr := dropSchema(context.WithoutCancel(ctx), dbURL, schema); derr != nil && err == nil {
				err = derr
			}
		}()
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dctx, err := dbos.NewContext(ctx, dbos.Config{
		AppName:        "corral-bench",
		DatabaseURL:    dbURL,
		DatabaseSchema: schema,
		Logger:         logger,
	})
	if err != nil {
		return fmt.Errorf("new context: %w", err)
	}
	var count counter
	agent := func(ctx dbos.Context, steps int) (int, error) {
		for i := range steps {
			var err error
			if i%2 == 0 {
				_, err = dbos.RunAsStep(ctx, func(context.Context) (string, error) {
					return count.model(w, i), nil
				}, dbos.WithStepName("model"))
			} else {
				_, err = dbos.RunAsStep(ctx, func(context.Context) (string, error) {
					return count.tool(), nil
				}, dbos.WithStepName("tool"))
			}
			if err != nil {
				return i, err
			}
		}
		return steps, nil
	}
	dbos.RegisterWorkflow(dctx, agent, dbos.WithWorkflowName("agent"))
	if err := dbos.Launch(dctx); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	defer func() { _ = dbos.Shutdown(dctx, 10*time.Second) }()

	res, err := drive(ctx, w, &count, func(_ context.Context, i int) (int, error) {
		h, err := dbos.RunWorkflow(dctx, agent, w.steps, dbos.WithWorkflowID("bench-"+strconv.Itoa(i)))
		if err != nil {
			return 0, fmt.Errorf("start: %w", err)
		}
		done, err := h.GetResult()
		if err != nil {
			return 0, fmt.Errorf("result: %w", err)
		}
		return done, nil
	})
	if err != nil {
		return err
	}
	res.Peer = "dbos"
	res.Config = map[string]string{
		"engine":             "github.com/dbos-inc/dbos-transact-golang " + moduleVersion("github.com/dbos-inc/dbos-transact-golang"),
		"store":              "postgresql " + settings["server_version"],
		"fsync":              settings["fsync"],
		"synchronous_commit": settings["synchronous_commit"],
		"wal_sync_method":    settings["wal_sync_method"],
		"durability":         durability(settings),
	}
	return res.print(os.Stdout)
}

// durability says in a few words what survives a crash of the machine.
func durability(s map[string]string) string {
	switch {
	case s["fsync"] != "on":
		return "no fsync"
	case s["synchronous_commit"] == "off":
		return "WAL fsynced in the background, not at commit"
	default:
		return "WAL fsync at every commit (group commit)"
	}
}

// createDatabase creates database on server unless it exists.
func createDatabase(ctx context.Context, server, database string) error {
	conn, err := pgx.Connect(ctx, server+"/postgres?sslmode=disable")
	if err != nil {
		return fmt.Errorf("connect to %s: %w", server, err)
	}
	defer func() { _ = conn.Close(ctx) }()
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{database}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", database, err)
	}
	return nil
}

// serverSettings reads the settings that decide what a commit costs.
func serverSettings(ctx context.Context, url string) (map[string]string, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	defer func() { _ = conn.Close(ctx) }()
	s := map[string]string{}
	for _, name := range []string{"server_version", "fsync", "synchronous_commit", "wal_sync_method"} {
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			return nil, fmt.Errorf("setting %s: %w", name, err)
		}
		s[name] = v
	}
	return s, nil
}

// dropSchema drops the run's schema and everything in it.
func dropSchema(ctx context.Context, url, schema string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", url, err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		return fmt.Errorf("drop schema %s: %w", schema, err)
	}
	return nil
}
