package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/metrics"
	"go.temporal.io/server/common/persistence/sql/sqlplugin/postgresql"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
	sqltool "go.temporal.io/server/tools/sql"
)

// storeOptions say where the server keeps its state.
type storeOptions struct {
	kind    string // "file", "memory" or "postgres"
	dir     string // the SQLite file's directory, for "file"
	journal string // SQLite's journal_mode pragma, "" for SQLite's default (delete)
	sync    string // SQLite's synchronous pragma, "" for SQLite's default (full)
	pgHost  string // PostgreSQL, for "postgres"
	pgPort  int
	pgUser  string
	log     string // the server's log level on standard error, "" for none

	// settings are PostgreSQL's, read by startServer: server_version,
	// fsync, synchronous_commit, wal_sync_method.
	settings map[string]string
}

// server is a whole Temporal server (frontend, history, matching and the
// internal worker service) in this process, on loopback ports, with one
// history shard. With SQLite for both its stores it is what `temporal
// server start-dev` runs, built from the module proxy instead of downloaded;
// with PostgreSQL its schema is the one temporal-sql-tool installs.
type server struct {
	srv      temporal.Server
	store    *storeOptions
	hostPort string // the frontend's gRPC address
}

// startServer starts a server with namespace registered before it starts, so
// that no namespace-cache refresh stands between start and the first workflow.
func startServer(store *storeOptions, namespace string) (*server, error) {
	sqlCfg := &config.SQL{
		PluginName:        sqliteplugin.PluginName,
		ConnectAttributes: map[string]string{},
	}
	visCfg := sqlCfg
	switch store.kind {
	case "memory":
		// The shared in-memory database lives as long as a connection to it;
		// the plugin keeps one open for the server's life.
		sqlCfg.DatabaseName = fmt.Sprintf("temporal-bench-%d", rand.Int64())
		sqlCfg.ConnectAttributes["mode"] = "memory"
		sqlCfg.ConnectAttributes["cache"] = "shared"
	case "file":
		sqlCfg.DatabaseName = filepath.Join(store.dir, "temporal.db")
		sqlCfg.ConnectAttributes["mode"] = "rwc"
		if store.journal != "" {
			sqlCfg.ConnectAttributes["journal_mode"] = store.journal
		}
		if store.sync != "" {
			sqlCfg.ConnectAttributes["synchronous"] = store.sync
		}
		if err := sqlite.SetupSchema(sqlCfg); err != nil {
			return nil, fmt.Errorf("temporal: sqlite schema in %s: %w", sqlCfg.DatabaseName, err)
		}
	case "postgres":
		var err error
		if sqlCfg, err = setupPostgres(store, pgDatabase, "postgresql/v12/temporal"); err != nil {
			return nil, err
		}
		if visCfg, err = setupPostgres(store, pgDatabase+"_visibility", "postgresql/v12/visibility"); err != nil {
			return nil, err
		}
		if store.settings, err = pgSettings(sqlCfg); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("temporal: -store %q: want file, memory or postgres", store.kind)
	}

	ports, err := freePorts(8)
	if err != nil {
		return nil, err
	}
	const ip = "127.0.0.1"
	frontend := fmt.Sprintf("%s:%d", ip, ports[0])
	service := func(grpc, membership int) config.Service {
		return config.Service{RPC: config.RPC{GRPCPort: grpc, MembershipPort: membership, BindOnIP: ip}}
	}
	cfg := &config.Config{
		Global: config.Global{
			Membership: config.Membership{MaxJoinDuration: 30 * time.Second, BroadcastAddress: ip},
		},
		Persistence: config.Persistence{
			DefaultStore:     "default",
			VisibilityStore:  "visibility",
			NumHistoryShards: 1,
			DataStores: map[string]config.DataStore{
				"default":    {SQL: sqlCfg},
				"visibility": {SQL: visCfg},
			},
		},
		ClusterMetadata: &cluster.Config{
			FailoverVersionIncrement: 10,
			MasterClusterName:        "active",
			CurrentClusterName:       "active",
			ClusterInformation: map[string]cluster.ClusterInformation{
				"active": {Enabled: true, InitialFailoverVersion: 1, RPCAddress: frontend},
			},
		},
		DCRedirectionPolicy: config.DCRedirectionPolicy{Policy: "noop"},
		Services: map[string]config.Service{
			"frontend": service(ports[0], ports[1]),
			"history":  service(ports[2], ports[3]),
			"matching": service(ports[4], ports[5]),
			"worker":   service(ports[6], ports[7]),
		},
		Archival: config.Archival{
			History:    config.HistoryArchival{State: "disabled"},
			Visibility: config.VisibilityArchival{State: "disabled"},
		},
		NamespaceDefaults: config.NamespaceDefaults{Archival: config.ArchivalNamespaceDefaults{
			History:    config.HistoryArchivalNamespaceDefaults{State: "disabled"},
			Visibility: config.VisibilityArchivalNamespaceDefaults{State: "disabled"},
		}},
		PublicClient: config.PublicClient{HostPort: frontend},
	}

	ns, err := sqlite.NewNamespaceConfig("active", namespace, false, nil)
	if err != nil {
		return nil, fmt.Errorf("temporal: namespace %s: %w", namespace, err)
	}
	if err := sqlite.CreateNamespaces(sqlCfg, ns); err != nil {
		return nil, fmt.Errorf("temporal: namespace %s: %w", namespace, err)
	}

	var logger log.Logger = log.NewNoopLogger()
	if store.log != "" {
		logger = log.NewZapLogger(log.BuildZapLogger(log.Config{Level: store.log}))
	}
	srv, err := temporal.NewServer(
		temporal.WithConfig(cfg),
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithLogger(logger),
		temporal.WithCustomMetricsHandler(metrics.NoopMetricsHandler),
		temporal.WithDynamicConfigClient(dynamicconfig.StaticClient{}),
	)
	if err != nil {
		return nil, fmt.Errorf("temporal: new server: %w", err)
	}
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("temporal: start server: %w", err)
	}
	return &server{srv: srv, store: store, hostPort: frontend}, nil
}

// pgDatabase is the database of the server's state on PostgreSQL; its
// visibility store is pgDatabase_visibility. Both are made anew at each run
// and dropped after it.
const pgDatabase = "temporal_bench"

// setupPostgres drops database if it exists, creates it and loads Temporal's
// embedded schema into it, as temporal-sql-tool's create-database,
// setup-schema and update-schema do (this is that tool, run in-process).
func setupPostgres(store *storeOptions, database, schema string) (*config.SQL, error) {
	cfg := &config.SQL{
		PluginName:      postgresql.PluginName,
		DatabaseName:    database,
		ConnectAddr:     net.JoinHostPort(store.pgHost, strconv.Itoa(store.pgPort)),
		ConnectProtocol: "tcp",
		User:            store.pgUser,
		// As many as DBOS's pool has (its default), on the same server.
		MaxConns:     20,
		MaxIdleConns: 20,
	}
	dropPostgres(store, database) // left by a run that did not finish
	for _, step := range [][]string{
		{"create-database", "--defaultdb", "postgres"},
		{"setup-schema", "--version", "0.0"},
		{"update-schema", "--schema-name", schema},
	} {
		if err := sqltool.RunTool(append(sqlTool(store, database), step...)); err != nil {
			return nil, fmt.Errorf("temporal: %s %s: %w", step[0], database, err)
		}
	}
	return cfg, nil
}

// dropPostgres drops database if it exists.
func dropPostgres(store *storeOptions, database string) {
	_ = sqltool.RunTool(append(sqlTool(store, database), "drop-database", "--force", "--defaultdb", "postgres"))
}

// sqlTool is temporal-sql-tool's command line for database, up to the command.
func sqlTool(store *storeOptions, database string) []string {
	return []string{"temporal-sql-tool", "--quiet", "--plugin", postgresql.PluginName,
		"--endpoint", store.pgHost, "--port", strconv.Itoa(store.pgPort), "--user", store.pgUser, "--database", database}
}

// pgSettings reads the settings that decide what a commit costs.
func pgSettings(cfg *config.SQL) (map[string]string, error) {
	db, err := sql.Open("postgres", fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable", cfg.User, cfg.ConnectAddr, cfg.DatabaseName))
	if err != nil {
		return nil, fmt.Errorf("temporal: postgres settings: %w", err)
	}
	defer func() { _ = db.Close() }()
	s := map[string]string{}
	for _, name := range []string{"server_version", "fsync", "synchronous_commit", "wal_sync_method"} {
		var v string
		if err := db.QueryRow("SELECT current_setting($1)", name).Scan(&v); err != nil {
			return nil, fmt.Errorf("temporal: postgres setting %s: %w", name, err)
		}
		s[name] = v
	}
	return s, nil
}

// stop stops the server and drops its PostgreSQL databases.
func (s *server) stop() error {
	err := s.srv.Stop()
	if s.store.kind == "postgres" {
		dropPostgres(s.store, pgDatabase)
		dropPostgres(s.store, pgDatabase+"_visibility")
	}
	if err != nil {
		return fmt.Errorf("temporal: stop server: %w", err)
	}
	return nil
}

// freePorts returns n distinct loopback ports free at the moment of asking,
// below 32768: Temporal's PostgreSQL schema keeps membership ports in a
// smallint, so the kernel's ephemeral ports (32768 and up) do not fit.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries == 1000 {
			return nil, errors.New("temporal: no free loopback port in 20000-32767")
		}
		port := 20000 + rand.IntN(12768)
		l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		ls = append(ls, l)
		ports = append(ports, port)
	}
	return ports, nil
}
