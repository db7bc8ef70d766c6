package config

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Load reads resources from files and directories (searched recursively for
// .yaml, .yml and .json files, hidden ones skipped) and from standard input
// when a path is "-". It validates every document of every file and returns
// them only if all are valid, and only if no resource is declared twice;
// otherwise the Errors name the problems found, at most 100 in all (see
// Errors.Truncate).
func Load(paths []string, stdin io.Reader) ([]Document, error) {
	var files []string
	for _, p := range paths {
		if p == "-" {
			files = append(files, p)
			continue
		}
		found, err := resourceFiles(p)
		if err != nil {
			return nil, err
		}
		files = append(files, found...)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no resource files (.yaml, .yml, .json) in %s", strings.Join(paths, ", "))
	}
	var (
		docs []Document
		errs Errors
	)
	for _, f := range files {
		var (
			data []byte
			err  error
		)
		if f == "-" {
			data, err = io.ReadAll(stdin)
			f = "(stdin)"
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		got, problems := decode(f, data)
		docs = append(docs, got...)
		errs = append(errs, problems...)
	}
	errs = append(errs, Duplicates(docs)...)
	if len(errs) > 0 {
		return nil, errs.Truncate(maxTotalProblems)
	}
	return docs, nil
}

// Duplicates reports every resource declared more than once in docs, naming
// the document that declared it first.
func Duplicates(docs []Document) Errors {
	var errs Errors
	first := map[string]Document{}
	for _, d := range docs {
		id := d.Resource.ID()
		if prev, ok := first[id]; ok {
			errs = append(errs, FieldError{
				Source: d.Source, Document: d.Index, Resource: id, Field: "metadata.name",
				Message: fmt.Sprintf("%s is declared twice (first in %s document %d)", id, prev.Source, prev.Index),
			})
			continue
		}
		first[id] = d
	}
	return errs
}

// resourceFiles expands a path: a file stands for itself, a directory for the
// resource files below it, in lexical order.
func resourceFiles(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != path && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() && slices.Contains([]string{".yaml", ".yml", ".json"}, strings.ToLower(filepath.Ext(p))) {
			files = append(files, p)
		}
		return nil
	})
	return files, err
}
