module overseer.example/go-http

go 1.19
