package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"time"

	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/metrics"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
)

// storeOptions say where the server keeps its state.
type storeOptions struct {
	kind    string // "file" or "memory"
	dir     string // the SQLite file's directory, for "file"
	journal string // SQLite's journal_mode pragma, "" for SQLite's default (delete)
	sync    string // SQLite's synchronous pragma, "" for SQLite's default (full)
}

// server is a whole Temporal server (frontend, history, matching and the
// internal worker service) in this process, on loopback ports, with one
// history shard and SQLite for both its stores: what `temporal server
// start-dev` runs, built from the module proxy instead of downloaded.
type server struct {
	srv      temporal.Server
	hostPort string // the frontend's gRPC address
}

// startServer starts a server with namespace registered before it starts, so
// that no namespace-cache refresh stands between start and the first workflow.
func startServer(store storeOptions, namespace string) (*server, error) {
	sqlCfg := &config.SQL{
		PluginName:        sqliteplugin.PluginName,
		ConnectAttributes: map[string]string{},
	}
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
	default:
		return nil, fmt.Errorf("temporal: -store %q: want file or memory", store.kind)
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
			DefaultStore:     sqliteplugin.PluginName,
			VisibilityStore:  sqliteplugin.PluginName,
			NumHistoryShards: 1,
			DataStores:       map[string]config.DataStore{sqliteplugin.PluginName: {SQL: sqlCfg}},
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

	srv, err := temporal.NewServer(
		temporal.WithConfig(cfg),
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithLogger(log.NewNoopLogger()),
		temporal.WithCustomMetricsHandler(metrics.NoopMetricsHandler),
		temporal.WithDynamicConfigClient(dynamicconfig.StaticClient{}),
	)
	if err != nil {
		return nil, fmt.Errorf("temporal: new server: %w", err)
	}
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("temporal: start server: %w", err)
	}
	return &server{srv: srv, hostPort: frontend}, nil
}

// stop stops the server.
func (s *server) stop() error {
	if err := s.srv.Stop(); err != nil {
		return fmt.Errorf("temporal: stop server: %w", err)
	}
	return nil
}

// freePorts returns n distinct loopback ports free at the moment of asking.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("temporal: free port: %w", err)
		}
		ls = append(ls, l)
		addr, ok := l.Addr().(*net.TCPAddr)
		if !ok {
			return nil, errors.New("temporal: free port: not a TCP address")
		}
		ports = append(ports, addr.Port)
	}
	return ports, nil
}
