package config

import (
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// englishPrinter renders the schema library's own messages for violations
// that kindMessage does not word itself.
var englishPrinter = message.NewPrinter(language.English)
