package examples

import (
	"io/fs"
	"testing"

	"github.com/corral-dev/corral/internal/config"
)

// TestFilesDecode: every example file at the top of examples/ is a valid
// resource set, as `corral apply -f examples/` needs (corral demo no
// longer applies them, so this is what keeps them honest).
func TestFilesDecode(t *testing.T) {
	n := 0
	err := fs.WalkDir(Files, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := Files.ReadFile(path)
		if err != nil {
			return err
		}
		docs, err := config.Decode("examples/"+path, data)
		if err != nil {
			t.Errorf("examples/%s: %v", path, err)
		}
		n += len(docs)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Error("no example resources embedded")
	}
}
