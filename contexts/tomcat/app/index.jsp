<%@ page contentType="text/html; charset=UTF-8" %>
<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>seed tomcat</title></head>
<body>
<h1>Hello from the seed family's Tomcat</h1>
<p>Served by <%= application.getServerInfo() %> on Java <%= System.getProperty("java.version") %>,
running as <%= System.getProperty("user.name") %>.</p>
<p><a href="static.html">A static page</a></p>
</body>
</html>
