package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/edge/rest"
)

const petstore = "../openapi/testdata/petstore/openapi.yaml"

func TestToolsImportOffline(t *testing.T) {
	out, errOut, code := run(t, "", "tools", "import", "openapi", petstore, "--name", "petstore", "--base-url", "http://127.0.0.1:1/v3", "-o", "json")
	var list rest.ToolList
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil {
		t.Fatalf("tools import -o json: exit %d\n%s%s", code, out, errOut)
	}
	if len(list.Tools) != 19 || list.Tools[0].Source != "petstore" {
		t.Errorf("tools import: %d tools, want the Petstore's 19", len(list.Tools))
	}

	out, _, code = run(t, "", "tools", "import", "openapi", petstore, "--name", "petstore", "--base-url", "http://127.0.0.1:1/v3", "-o", "yaml")
	if code != 0 || !strings.Contains(out, "kind: ToolSource") || !strings.Contains(out, "document: |") {
		t.Errorf("tools import -o yaml: exit %d, want a ToolSource with the document inline:\n%.300s", code, out)
	}
	// Saved and validated offline, as a user would before applying it.
	if _, errOut, code := run(t, out, "validate", "-f", "-"); code != 0 {
		t.Errorf("validate of the imported ToolSource: exit %d %s", code, errOut)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"tools", "import", "openapi", petstore, "--name", "petstore"}, "names no absolute server URL: pass --base-url"},
		{[]string{"tools", "import", "openapi", petstore, "--name", "Pet_Store", "--base-url", "http://x"}, `--name "Pet_Store" is not a valid name`},
		{[]string{"tools", "import", "openapi", "missing.yaml", "--name", "x", "--base-url", "http://x"}, "missing.yaml"},
	} {
		_, errOut, code := run(t, "", tt.args...)
		if code == 0 || !strings.Contains(errOut, tt.want) {
			t.Errorf("corral %s = exit %d %q, want an error containing %q", strings.Join(tt.args, " "), code, errOut, tt.want)
		}
	}
}

func TestToolsCommands(t *testing.T) {
	s := apptest.Start(t)
	conn := []string{"--server", s.URL, "--token", s.Token}
	_, errOut, code := run(t, "", append([]string{"tools", "import", "openapi", petstore, "--name", "petstore", "--base-url", "http://127.0.0.1:1/v3", "--apply"}, conn...)...)
	if code != 0 || !strings.Contains(errOut, "ToolSource/petstore created: 19 tools") {
		t.Fatalf("tools import --apply: exit %d %s", code, errOut)
	}
	s.WaitTool(t, "petstore.getPetById")

	out, _, code := run(t, "", append([]string{"get", "tools"}, conn...)...)
	if code != 0 || !strings.Contains(out, "petstore.deletePet") || !strings.Contains(out, "DELETE /pet/{petId}") || !strings.Contains(out, "destructive") {
		t.Errorf("get tools: exit %d\n%s", code, out)
	}
	out, _, code = run(t, "", append([]string{"tools", "describe", "petstore.getPetById"}, conn...)...)
	if code != 0 || !strings.Contains(out, "Operation:    GET /pet/{petId}") || !strings.Contains(out, `"petId"`) {
		t.Errorf("tools describe: exit %d\n%s", code, out)
	}
	_, errOut, code = run(t, "", append([]string{"tools", "describe", "petstore.nope"}, conn...)...)
	if code == 0 || !strings.Contains(errOut, "tool_not_found") && !strings.Contains(errOut, "no tool named") {
		t.Errorf("tools describe of an unknown tool: exit %d %s", code, errOut)
	}
	_, errOut, code = run(t, "", append([]string{"tools", "drift"}, conn...)...)
	if code != 0 || !strings.Contains(errOut, "no drift") {
		t.Errorf("tools drift: exit %d %s", code, errOut)
	}
}
